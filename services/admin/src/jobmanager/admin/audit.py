"""The audit log: one row per mutating call, written in the action's own transaction.

A refused action (a 404, 409 or 422 decided by the action itself) rolls back, and its audit
row is then written on its own with the outcome `refused` and the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from fastapi import HTTPException
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.auth import Principal
from jobmanager.admin.state import Database
from jobmanager.store.ledger import LedgerError
from jobmanager.store.models import AuditEntry

audit = cast(Table, AuditEntry.__table__)


async def record(
    conn: AsyncConnection,
    *,
    actor: Principal,
    action: str,
    target: str,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        insert(audit).values(
            actor=actor.name,
            action=action,
            target=target,
            outcome=outcome,
            detail=detail or {},
        )
    )


@contextlib.asynccontextmanager
async def audited(
    db: Database,
    actor: Principal,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
) -> AsyncIterator[AsyncConnection]:
    """A transaction for an action that commits together with its audit row."""
    try:
        async with db.begin() as conn:
            yield conn
            await record(conn, actor=actor, action=action, target=target, detail=detail)
    except (LedgerError, HTTPException) as exc:
        reason = exc.detail if isinstance(exc, HTTPException) else str(exc)
        async with db.begin() as conn:
            await record(
                conn,
                actor=actor,
                action=action,
                target=target,
                outcome="refused",
                detail={**(detail or {}), "reason": str(reason)[:1000]},
            )
        raise

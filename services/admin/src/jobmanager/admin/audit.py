"""The audit log: one row per mutating call, written in the action's own transaction.

A refused action (a 404, 409 or 422 decided by the action itself) rolls back, and its audit
row is then written on its own with the outcome `refused` and the reason. A call refused
before it ran (401 without a valid key, 403 for a role too low) is recorded by `auth.admit`
with the outcome `denied`, the route as the action and the path as the target.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, cast

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.problems import ResourceConflict
from jobmanager.admin.state import Database
from jobmanager.store.ledger import LedgerError
from jobmanager.store.models import AuditEntry

if TYPE_CHECKING:  # auth records its refusals here, so this module may not import it
    from jobmanager.admin.auth import Principal

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
    # Names may be as long as the columns; their prefixes ("key:", "job:") must not overflow.
    await conn.execute(
        insert(audit).values(
            actor=actor.name[:200],
            action=action,
            target=target[:200],
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
    except (LedgerError, ResourceConflict, HTTPException, RequestValidationError) as exc:
        if isinstance(exc, HTTPException):
            reason = str(exc.detail)
        elif isinstance(exc, RequestValidationError):
            reason = "; ".join(str(e.get("msg")) for e in exc.errors())
        else:
            reason = str(exc)
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

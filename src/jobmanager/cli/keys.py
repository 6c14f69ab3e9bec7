"""`jobmanager apikey create | list | revoke`: keys straight in the database (no running admin
needed). Revoking is written to the audit log, as the API's `DELETE /keys/{id}` is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Row, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.audit import record
from jobmanager.admin.auth import Principal, create_key
from jobmanager.core.config import DatabaseSettings
from jobmanager.store import db
from jobmanager.store.models import ApiKey

api_keys = cast(Table, ApiKey.__table__)
# Who the audit log names for what is done with this command: whoever may run it can reach
# the database directly, so it acts as an admin.
CLI = Principal("command line", "admin")


class UnknownKey(LookupError):
    """No such key (or it is revoked already)."""


@asynccontextmanager
async def _transaction() -> AsyncIterator[AsyncConnection]:
    settings = DatabaseSettings()
    await db.check(settings.database_url)
    engine = db.create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            yield conn
    finally:
        await engine.dispose()


async def create(*, role: str, name: str) -> str:
    async with _transaction() as conn:
        _, key = await create_key(conn, name=name, role=role)
    return key


async def all_keys() -> list[Row[Any]]:
    """Every key, revoked ones included, oldest first."""
    async with _transaction() as conn:
        return list((await conn.execute(select(api_keys).order_by(api_keys.c.id))).all())


async def revoke(key_id: int) -> str:
    """Revoke a key; its name. UnknownKey if there is no such key in use."""
    async with _transaction() as conn:
        name = await conn.scalar(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
            .returning(api_keys.c.name)
        )
        if name is None:
            raise UnknownKey(f"key {key_id} does not exist or is revoked already")
        await record(conn, actor=CLI, action="keys.revoke", target=f"key:{key_id}")
    return str(name)

"""Alembic environment: runs migrations on the URL our code passes in (one async engine)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from jobmanager.store import functions
from jobmanager.store.db import create_engine
from jobmanager.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
        # The ledger's functions are a repeatable migration: whenever the tables are at this
        # version's head, the database gets this version's `ledger.sql` (if it differs).
        at = context.get_context().get_current_revision()
        if at == context.script.get_current_head():
            functions.install(connection)


async def _migrate(url: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


url = context.config.attributes.get("database_url") or context.config.get_main_option(
    "sqlalchemy.url"
)
if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_migrate(str(url)))

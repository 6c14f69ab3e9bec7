"""The migrations produce exactly the models' schema, and downgrade cleanly; a service
refuses to start on an older schema."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.store.migrate import SchemaBehind, alembic_config, check_schema
from jobmanager.store.models import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_migrated_schema_equals_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


async def test_downgrade_to_base_and_up_again(engine: AsyncEngine, database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    async with engine.connect() as conn:
        assert await conn.run_sync(_tables) == {"alembic_version"}
    await asyncio.to_thread(command.upgrade, config, "head")
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []


async def test_a_service_refuses_a_schema_older_than_its_own(
    engine: AsyncEngine, database_url: str
) -> None:
    await check_schema(engine)  # at head
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0002")
    with pytest.raises(SchemaBehind, match=r"at revision 0002 .* needs 0003: run `jobmanager"):
        await check_schema(engine)
    async with engine.begin() as conn:
        # A newer version's migration (a rolling upgrade migrates first) is accepted.
        await conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    await check_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaBehind, match="at revision none"):
        await check_schema(engine)

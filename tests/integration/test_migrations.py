"""The migrations produce exactly the models' schema plus the ledger's functions, and
downgrade cleanly; a service refuses to start on an older schema or other functions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.store import functions
from jobmanager.store.migrate import SchemaBehind, alembic_config, check_schema
from jobmanager.store.models import Base


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _functions(engine: AsyncEngine) -> set[str]:
    """Every function of the schema's own (none come with Postgres into `public`)."""
    query = text(
        "SELECT p.proname FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
        "WHERE n.nspname = current_schema()"
    )
    async with engine.connect() as conn:
        return set((await conn.scalars(query)).all())


async def test_migrated_schema_equals_the_models_plus_the_ledger_functions(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []
        installed = await conn.run_sync(functions.installed_digest)
    expected = set(functions.names(functions.source()))
    assert len(expected) > 10
    assert await _functions(engine) == expected
    assert installed == functions.digest(functions.source())


async def test_migrate_installs_a_changed_ledger_file_and_leaves_an_equal_one(
    engine: AsyncEngine, database_url: str
) -> None:
    config = alembic_config(database_url)
    async with engine.begin() as conn:
        await conn.execute(text(f"COMMENT ON FUNCTION {functions.MARKED} IS 'sha256:old'"))
    with pytest.raises(SchemaBehind, match="ledger functions are not this version's"):
        await check_schema(engine)
    await asyncio.to_thread(command.upgrade, config, "head")
    await check_schema(engine)
    async with engine.connect() as conn:
        assert await conn.run_sync(functions.install) is False, "the same file: nothing to do"


async def test_downgrade_to_base_and_up_again(engine: AsyncEngine, database_url: str) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    async with engine.connect() as conn:
        assert await conn.run_sync(_tables) == {"alembic_version"}
    assert await _functions(engine) == set()
    await asyncio.to_thread(command.upgrade, config, "head")
    async with engine.connect() as conn:
        assert await conn.run_sync(_differences) == []
    assert await _functions(engine) == set(functions.names(functions.source()))


async def test_a_service_refuses_a_schema_older_than_its_own(
    engine: AsyncEngine, database_url: str
) -> None:
    await check_schema(engine)  # at head
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0002")
    with pytest.raises(SchemaBehind, match=r"at revision 0002 .* needs 0004: run `jobmanager"):
        await check_schema(engine)
    async with engine.begin() as conn:
        # A newer version's migration (a rolling upgrade migrates first) is accepted.
        await conn.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    await check_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaBehind, match="at revision none"):
        await check_schema(engine)

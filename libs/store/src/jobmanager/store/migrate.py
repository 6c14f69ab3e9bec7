"""Creating and upgrading the schema with Alembic, driven from code (`jobmanager migrate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.runtime import Unavailable
from jobmanager.store import functions
from jobmanager.store.db import create_database_if_missing

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Create the database if needed, then upgrade it. Call from outside an event loop
    (the migration environment runs its own)."""
    asyncio.run(create_database_if_missing(database_url))
    command.upgrade(alembic_config(database_url), revision)


class SchemaBehind(Unavailable):
    """The database's schema is older than this version's; the message says what to run."""


def _revision(connection: Connection) -> tuple[str | None, str | None]:
    """The schema's revision and the digest of its ledger functions."""
    current = MigrationContext.configure(connection).get_current_revision()
    return current, functions.installed_digest(connection)


async def check_schema(engine: AsyncEngine) -> None:
    """Raise SchemaBehind unless the database has this version's schema.

    A service started before `jobmanager migrate` ran (a deployment that starts them
    together) would otherwise fail every transition and park every message. At this
    version's revision the ledger's functions must be this version's `ledger.sql`. A schema
    newer than this version's (a rolling upgrade that migrated first) is accepted: migrations
    add what older code does not use.
    """
    async with engine.connect() as conn:
        current, installed = await conn.run_sync(_revision)
    script = ScriptDirectory.from_config(alembic_config(""))
    head = script.get_current_head()
    if current == head:
        if installed != functions.digest(functions.source()):
            raise SchemaBehind(
                "the database's ledger functions are not this version's: "
                "run `jobmanager migrate` first"
            )
        return
    if current is not None:
        try:
            script.get_revision(current)
        except CommandError:  # unknown here: a revision of a newer version
            return
    raise SchemaBehind(
        f"the database's schema is at revision {current or 'none'} and this version needs "
        f"{head}: run `jobmanager migrate` first"
    )

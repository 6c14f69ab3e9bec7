"""Creating and upgrading the schema with Alembic, driven from code (`jobmanager migrate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

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

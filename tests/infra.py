"""Small helpers the fixtures share: databases on the test server."""

from __future__ import annotations

import asyncpg

from jobmanager.store.db import with_database


def database_on(server_url: str, name: str) -> str:
    return with_database(server_url, name)


async def admin_execute(server_url: str, *statements: str) -> None:
    """Run statements on the server's maintenance database (CREATE/DROP DATABASE)."""
    conn = await asyncpg.connect(database_on(server_url, "postgres"))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()

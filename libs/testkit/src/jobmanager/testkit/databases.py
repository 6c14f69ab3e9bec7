"""Databases of their own on the shared Postgres server: a template migrated once, clones of
it (a test's database costs a `CREATE DATABASE ... TEMPLATE`, not a migration), and new
databases migrated from scratch (the benchmark measures on those).

`server_url` is a maintenance database on the server (`postgres`): databases are created and
dropped from a connection to it. Dropping is tried again for a while, since other people's
fault tests restart the server, and a database left behind would stay for good.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import asyncpg

from jobmanager.store.db import plain_url, with_database
from jobmanager.store.migrate import upgrade
from jobmanager.testkit.namespaces import unique

DROP_ATTEMPTS = 15


def database_on(server_url: str, name: str) -> str:
    """The URL of the database `name` on the server of `server_url`."""
    return with_database(server_url, name)


async def admin_execute(server_url: str, *statements: str, attempts: int = 1) -> None:
    """Statements on the server's maintenance database (CREATE / DROP DATABASE), tried
    `attempts` times while the server does not answer."""
    for attempt in range(attempts):
        try:
            conn = await asyncpg.connect(plain_url(server_url))
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()
            return
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(2)


async def drop(server_url: str, name: str) -> None:
    """Drop a database if it exists, whoever is still connected to it."""
    await admin_execute(
        server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', attempts=DROP_ATTEMPTS
    )


@contextlib.contextmanager
def template(server_url: str, name: str) -> Iterator[str]:
    """The database `name` migrated with `jobmanager migrate`'s code, for clones; its name.
    Synchronous (`upgrade` runs its own event loop): made once per session, dropped after."""
    asyncio.run(admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}"'))
    upgrade(database_on(server_url, name))
    try:
        yield name
    finally:
        asyncio.run(drop(server_url, name))


@contextlib.asynccontextmanager
async def clone(server_url: str, template: str, *, prefix: str = "jmtest") -> AsyncIterator[str]:
    """A new database copied from `template`; its URL. Dropped afterwards."""
    name = unique(prefix, "_")
    await admin_execute(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield database_on(server_url, name)
    finally:
        await drop(server_url, name)


@contextlib.asynccontextmanager
async def fresh(server_url: str, *, prefix: str, migrated: bool = True) -> AsyncIterator[str]:
    """A new database, with the project's migrations unless `migrated=False`; its URL.
    Dropped afterwards, whatever happened."""
    name = unique(prefix, "_")
    url = database_on(server_url, name)
    try:
        if migrated:
            # upgrade() runs its own event loop: a thread of its own keeps it off ours.
            await asyncio.to_thread(upgrade, url)
        else:
            await admin_execute(server_url, f'CREATE DATABASE "{name}"')
        yield url
    finally:
        await drop(server_url, name)

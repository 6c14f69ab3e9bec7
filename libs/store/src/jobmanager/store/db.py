"""Connecting to Postgres: engines from a plain postgresql:// URL, and clear errors."""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from jobmanager.core.config import redact_url
from jobmanager.core.runtime import Unavailable

START_HINT = (
    "start it with `docker compose up -d postgres` or "
    "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
)

ACCESS_HINT = (
    "check the user and password in JOBMANAGER_DATABASE_URL, or create the role with "
    "`createuser --pwprompt NAME` (and let it in through pg_hba.conf)"
)


class DatabaseUnavailable(Unavailable):
    """Postgres did not answer; the message says where we looked and how to start it."""


def async_url(url: str) -> str:
    """The SQLAlchemy URL for our driver (asyncpg) from a plain postgresql:// URL."""
    scheme, rest = url.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+asyncpg"
    return f"{scheme}://{rest}"


def plain_url(url: str) -> str:
    """The libpq-style URL (what asyncpg accepts) from any of our URL spellings."""
    return "postgresql://" + url.split("://", 1)[1]


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    connect_timeout: float = 10.0,
    command_timeout: float | None = 60.0,
    pre_ping: bool = True,
) -> AsyncEngine:
    """An engine for our driver. `command_timeout` bounds every statement, so that a database
    that stops answering mid-connection gives an error (waited out or answered 503) instead
    of a request or a consumer hanging for ever. `pre_ping` tests a pooled connection with a
    round trip before each use; without it, the first use of a connection that died (a
    database restart) fails with a transient error, for callers that retry those anyway."""
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_timeout=connect_timeout,
        connect_args={"timeout": connect_timeout, "command_timeout": command_timeout},
    )


# An engine's autocommit view, made once: `execution_options` builds a new one per call
# (about 35 µs), and `transaction` is on the matcher's hot path.
_AUTOCOMMIT: weakref.WeakKeyDictionary[AsyncEngine, AsyncEngine] = weakref.WeakKeyDictionary()


def _autocommit(engine: AsyncEngine) -> AsyncEngine:
    view = _AUTOCOMMIT.get(engine)
    if view is None:
        view = _AUTOCOMMIT[engine] = engine.execution_options(isolation_level="AUTOCOMMIT")
    return view


@asynccontextmanager
async def transaction(
    engine: AsyncEngine, *, single_statement: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction, committed at the end. With `single_statement`, for a
    caller that sends one statement (`jobmanager.store.bulk`): a connection in autocommit,
    where that statement is its own transaction, without the round trips of BEGIN and
    COMMIT."""
    if single_statement:
        async with _autocommit(engine).connect() as conn:
            yield conn
    else:
        async with engine.begin() as conn:
            yield conn


def with_database(url: str, database: str) -> str:
    parts = urlsplit(plain_url(url))
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(url: str) -> str:
    return urlsplit(plain_url(url)).path.lstrip("/") or "postgres"


async def check(url: str, *, timeout: float = 5.0) -> None:
    """Raise DatabaseUnavailable with one clear line if the server does not answer.

    A database that does not exist yet still means the server answers (`migrate` creates it).
    """
    try:
        conn = await asyncpg.connect(plain_url(url), timeout=timeout)
    except asyncpg.InvalidCatalogNameError:
        return
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        # 28000 (no such role, no pg_hba.conf entry) and 28P01 (wrong password): the server
        # answers, so starting it would not help.
        raise DatabaseUnavailable(
            f"PostgreSQL at {redact_url(url)} answers but refused the connection ({exc}); "
            f"{ACCESS_HINT}"
        ) from exc
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnavailable(
            f"PostgreSQL is not answering at {redact_url(url)} ({exc or type(exc).__name__}); "
            f"{START_HINT}"
        ) from exc
    await conn.close()


async def create_database_if_missing(url: str) -> bool:
    """Create the URL's database if it does not exist; True if it was created.

    Only a missing database makes us connect to the `postgres` maintenance database (which
    a managed Postgres may not let us use) to create it.
    """
    await check(url)
    try:
        await (await asyncpg.connect(plain_url(url))).close()
        return False
    except asyncpg.InvalidCatalogNameError:
        pass
    name = database_name(url)
    conn = await asyncpg.connect(with_database(url, "postgres"))
    try:
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # created by someone else meanwhile
        return True
    finally:
        await conn.close()


def transient(exc: BaseException) -> bool:
    """Whether a database error is worth waiting out (server down or restarting, connection
    lost, a deadlock or serialization failure) rather than a bug or bad data."""
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError | InterfaceError | OSError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        # 40001 serialization failure, 40P01 deadlock, 57P0x shutdown, 08xxx connection.
        return isinstance(code, str) and (code in ("40001", "40P01") or code[:2] in ("57", "08"))
    return isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError)

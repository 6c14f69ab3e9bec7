"""The benchmark's infrastructure: where the broker and the database server are, the
driver's connection, and what each measurement takes of its own; the test kit
(`jobmanager.testkit`) does the setting up and the tearing down.

Every measurement takes a database of its own (created and migrated from scratch, dropped
afterwards) and a namespace of its own (`bench-<uuid>`: our exchanges and queues, plus its
events exchange, deleted afterwards), so that it neither sees nor disturbs anything else on
the shared broker and server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg
from aio_pika.abc import AbstractConnection
from aiormq.exceptions import AMQPConnectionError

from jobmanager.core.topology import Topology
from jobmanager.testkit import databases, namespaces
from jobmanager.testkit import processes as kit_processes
from jobmanager.testkit.namespaces import broken

ROOT = Path(__file__).resolve().parents[1]


class MeasurementError(RuntimeError):
    """Something could not be measured; the message says what and where to look."""


@dataclass(frozen=True)
class Infra:
    """Where the broker and the database server are, and where logs go."""

    amqp_url: str
    server_url: str  # a maintenance database on the server (databases are created from it)
    workdir: Path
    # Settings given to every service of ours (`--set`), to compare one against the default.
    settings: dict[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def database(infra: Infra, *, migrated: bool = True) -> AsyncIterator[str]:
    """A new database (with the project's migrations unless `migrated=False`); its URL.

    Dropped afterwards, whatever happened.
    """
    async with databases.fresh(infra.server_url, prefix="bench", migrated=migrated) as url:
        yield url


@contextlib.asynccontextmanager
async def namespace(infra: Infra) -> AsyncIterator[Topology]:
    """A declared topology in a namespace of its own, deleted afterwards."""
    async with namespaces.namespace(infra.amqp_url, namespaces.unique("bench")) as topology:
        yield topology


@dataclass
class Driver:
    """The driver's broker connection, reopened when the broker was restarted under it.

    A plain (not robust) connection: a robust channel would answer a repeated passive
    declare from its cache, and a closed connection is how the driver notices a restart.
    """

    infra: Infra
    _connection: AbstractConnection | None = None

    async def connection(self, timeout: float = 120.0) -> AbstractConnection:
        if self._connection is not None and not broken(self._connection):
            return self._connection
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._connection = await aio_pika.connect(self.infra.amqp_url)
                return self._connection
            except (OSError, AMQPConnectionError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(2)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()


@contextlib.asynccontextmanager
async def driver(infra: Infra) -> AsyncIterator[Driver]:
    broker = Driver(infra)
    await broker.connection()
    try:
        yield broker
    finally:
        await broker.close()


def disturbed(exc: BaseException) -> bool:
    """Whether a failure looks like the database server having gone away under us."""
    return isinstance(
        exc,
        OSError
        | ConnectionError
        | asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | asyncpg.InternalClientError
        | asyncpg.AdminShutdownError,
    )


@contextlib.asynccontextmanager
async def processes(
    infra: Infra, connection: AbstractConnection | None = None
) -> AsyncIterator[kit_processes.Processes]:
    """The processes of one measurement, with the checkout on their path (the stand-ins and
    the relay are modules of `bench`); when `connection` is given, its closing (the broker
    restarted) ends waits at once."""
    async with kit_processes.processes(
        infra.workdir, {"PYTHONPATH": str(ROOT)}, connection
    ) as group:
        yield group


# -- memory -----------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def tree_rss_mb(pid: int) -> tuple[float, int]:
    """Resident memory of a process and all its descendants in MB (MiB), and how many
    descendants it has."""
    children = descendants(pid)
    return (rss_kib(pid) + sum(rss_kib(c) for c in children)) / 1024, len(children)

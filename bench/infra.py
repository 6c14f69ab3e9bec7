"""The benchmark's infrastructure: databases, AMQP namespaces, processes, waiting, cleanup.

Every measurement takes a database of its own (created and migrated from scratch, dropped
afterwards) and a namespace of its own (`bench-<uuid>`: our exchanges and queues, plus its
events exchange, deleted afterwards), so that it neither sees nor disturbs anything else on
the shared broker and server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPConnectionError, ChannelNotFoundEntity

from jobmanager.core.runtime import die_with_parent
from jobmanager.core.topology import Topology
from jobmanager.store.db import plain_url, with_database
from jobmanager.store.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


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

    def database_url(self, name: str) -> str:
        return with_database(self.server_url, name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique(prefix: str, sep: str = "-") -> str:
    return f"{prefix}{sep}{uuid.uuid4().hex[:12]}"


async def admin_execute(infra: Infra, *statements: str, attempts: int = 1) -> None:
    """Statements on the server's maintenance database (CREATE / DROP DATABASE), tried
    `attempts` times while the server does not answer (others' fault tests restart it)."""
    for attempt in range(attempts):
        try:
            conn = await asyncpg.connect(plain_url(infra.server_url))
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


@contextlib.asynccontextmanager
async def database(infra: Infra, *, migrated: bool = True) -> AsyncIterator[str]:
    """A new database (with the project's migrations unless `migrated=False`); its URL.

    Dropped afterwards, whatever happened.
    """
    name = unique("bench", "_")
    url = infra.database_url(name)
    try:
        if migrated:
            # upgrade() runs its own event loop: a thread of its own keeps it off ours.
            await asyncio.to_thread(upgrade, url)
        else:
            await admin_execute(infra, f'CREATE DATABASE "{name}"')
        yield url
    finally:
        await admin_execute(infra, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', attempts=15)


async def _on_fresh_connection(
    infra: Infra, work: Callable[[AbstractChannel], Awaitable[None]], *, attempts: int = 10
) -> None:
    """Run `work` on a channel of a connection of its own, retrying for a while: cleanup
    must succeed even after the broker was restarted under the driver's connection (other
    people's fault tests restart it)."""
    for attempt in range(attempts):
        try:
            connection = await aio_pika.connect(infra.amqp_url)
        except (OSError, AMQPConnectionError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(2)
            continue
        try:
            await work(await connection.channel())
            return
        finally:
            await connection.close()


@contextlib.asynccontextmanager
async def namespace(infra: Infra) -> AsyncIterator[Topology]:
    """A declared topology in a namespace of its own, deleted afterwards."""
    name = unique("bench")
    topology = Topology(name, events_exchange=f"{name}.cm-events")

    async def delete(channel: AbstractChannel) -> None:
        await topology.delete(channel)
        await channel.exchange_delete(topology.events_exchange)

    try:
        await _on_fresh_connection(infra, topology.declare)
        yield topology
    finally:
        await _on_fresh_connection(infra, delete)


async def delete_queues(infra: Infra, *queues: str, exchanges: Sequence[str] = ()) -> None:
    """Delete queues and exchanges (that need not exist) on a connection of its own."""

    async def delete(channel: AbstractChannel) -> None:
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)

    await _on_fresh_connection(infra, delete)


async def queue_counts(connection: AbstractConnection, queue: str) -> tuple[int, int]:
    """(consumers, ready messages) of a queue; (0, 0) if it does not exist (yet)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        return 0, 0
    result = declared.declaration_result
    with contextlib.suppress(Exception):
        await channel.close()
    return int(result.consumer_count or 0), int(result.message_count or 0)


def broken(connection: AbstractConnection) -> bool:
    """Whether the connection is gone. A plain aio-pika connection the broker closed (a
    restart) does not always say so itself; its transport (aiormq's connection) does."""
    if connection.is_closed:
        return True
    transport = getattr(connection, "transport", None)
    return transport is None or bool(transport.connection.is_closed)


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


async def wait_for(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    alive: Callable[[], None] | None = None,
) -> T:
    """Poll `probe` until it returns something other than None; `alive` raises if a process
    the wait depends on has died."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise MeasurementError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


# -- processes --------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def base_env(infra: Infra) -> dict[str, str]:
    """What every process of ours starts with: nothing of the driver's environment but PATH
    (a stray JOBMANAGER_* variable must not change what is measured)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(infra.workdir),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
    }


@dataclass
class Processes:
    """The processes of one measurement: started with their logs in the workdir, stopped
    (SIGTERM, then SIGKILL) when the measurement ends."""

    infra: Infra
    # When given, a closed driver connection (the broker restarted) also ends waits at once.
    connection: AbstractConnection | None = None
    running: list[Process] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Process:
        log = self.infra.workdir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                [sys.executable, *argv],
                env={**base_env(self.infra), **env},
                cwd=self.infra.workdir,  # no stray .env file is read from the checkout
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                preexec_fn=die_with_parent(signal.SIGTERM),  # none outlives the driver
            )
        process = Process(name, popen, log)
        self.running.append(process)
        return process

    def check_alive(self) -> None:
        if self.connection is not None and broken(self.connection):
            raise MeasurementError("the broker closed the driver's connection (a restart?)")
        for process in self.running:
            code = process.popen.poll()
            if code is not None:
                raise MeasurementError(
                    f"{process.name} exited with {code}; its log ({process.log}) ends:\n"
                    + process.tail()
                )

    async def stop(self, process: Process, timeout: float = 20.0) -> None:
        if process.popen.stdin is not None:
            with contextlib.suppress(OSError):
                process.popen.stdin.close()
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            await asyncio.to_thread(process.popen.wait)
        if process in self.running:
            self.running.remove(process)

    async def stop_all(self) -> None:
        for process in self.running:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in list(self.running):
            await self.stop(process)


@contextlib.asynccontextmanager
async def processes(
    infra: Infra, connection: AbstractConnection | None = None
) -> AsyncIterator[Processes]:
    group = Processes(infra, connection)
    try:
        yield group
    finally:
        await group.stop_all()


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

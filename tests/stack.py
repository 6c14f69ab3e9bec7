"""A running Job Manager made of real processes (matchers, executors) against the real
broker and database, in an AMQP namespace and a database of its own.

The acceptance tests share one stack per module; the fault tests start one per test and
disturb it (kill -9, restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from infra import admin_execute, database_on
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.broker import Publisher
from jobmanager.core.messages import Event
from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import JobSpec
from jobmanager.store import jobs as job_store
from jobmanager.store import settings as store_settings
from jobmanager.store.db import create_engine
from jobmanager.store.models import Attempt, Run

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


@dataclass
class Stack:
    amqp_url: str
    database_url: str
    topology: Topology
    workdir: Path
    engine: AsyncEngine
    connection: AbstractRobustConnection
    publisher: Publisher
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, int] = field(default_factory=dict)  # process name → metrics port

    # -- processes ---------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "JOBMANAGER_AMQP_URL": self.amqp_url,
            "JOBMANAGER_DATABASE_URL": self.database_url,
            "JOBMANAGER_NAMESPACE": self.topology.namespace,
            "JOBMANAGER_EVENTS_EXCHANGE": self.topology.events_exchange,
            "JOBMANAGER_SCRIPTS_DIR": str(self.workdir / "scripts"),
            "JOBMANAGER_LOG_LEVEL": "DEBUG",
            "IPX_CONFIG_PATH": str(self.workdir / "ipx.json"),
            "JOBMANAGER_SCRIPT_ENV": "IPX_CONFIG_PATH",
            **self.extra_env,
        }

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        port = self.metrics.get(name) or free_port()
        self.metrics[name] = port
        env = {"JOBMANAGER_METRICS_PORT": str(port), **(env or {})}
        with (self.workdir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", *args],
                env={**self.env(), **(env or {})},
                stdout=log,
                stderr=log,
            )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    async def _declared(self, queue: str) -> tuple[int, int]:
        # A fresh channel each time: a robust channel answers a repeated passive declare
        # from its cache.
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            result = declared.declaration_result
            return int(result.consumer_count or 0), int(result.message_count or 0)
        finally:
            await channel.close()

    async def consumers(self, queue: str) -> int:
        return (await self._declared(queue))[0]

    async def depth(self, queue: str) -> int:
        """Messages ready in a queue."""
        return (await self._declared(queue))[1]

    # -- configuration -----------------------------------------------------------------
    def job(self, **fields: Any) -> JobSpec:
        """A job whose event type is its own, so tests sharing the stack cannot collide."""
        fields.setdefault("name", f"job-{uuid.uuid4().hex[:8]}")
        fields.setdefault("trigger", {"event_type": f"test.{uuid.uuid4().hex[:8]}"})
        return JobSpec.model_validate(fields)

    async def add(self, *specs: JobSpec) -> None:
        """Store jobs and wait until the matcher has reloaded its catalogue."""
        before = self.log("matcher").count("catalogue loaded")
        async with self.engine.begin() as conn:
            for spec in specs:
                await job_store.upsert(conn, spec)
        await self.publisher.broadcast_change("jobs")
        await wait_for(lambda: _true(self.log("matcher").count("catalogue loaded") > before))

    async def set_interval(self, seconds: float) -> None:
        before = self.log("matcher").count("catalogue loaded")
        async with self.engine.begin() as conn:
            await store_settings.save(
                conn, "queue", store_settings.QueueSettings(interval_s=seconds)
            )
        await self.publisher.broadcast_change("settings")
        await wait_for(lambda: _true(self.log("matcher").count("catalogue loaded") > before))

    # -- traffic -----------------------------------------------------------------------
    async def publish(
        self, spec: JobSpec, data: dict[str, Any] | None = None, *, event_id: str | None = None
    ) -> str:
        event = Event(
            event_id=event_id or uuid.uuid4().hex,
            event_type=spec.trigger.event_type,
            data=data or {},
        )
        await self.publisher.publish(
            self.topology.events_exchange, event.event_type, event, message_id=event.event_id
        )
        return event.event_id

    async def publish_raw(
        self, body: bytes, routing_key: str = "test.raw", message_id: str | None = None
    ) -> None:
        await self.publisher.publish_raw(
            self.topology.events_exchange, routing_key, body, message_id=message_id
        )

    async def runs(self, spec: JobSpec) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(Run.__table__).where(Run.job_name == spec.name).order_by(Run.id)
                    )
                ).all()
            )

    async def attempts(self, run_id: int) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(Attempt.__table__)
                        .where(Attempt.run_id == run_id)
                        .order_by(Attempt.attempt)
                    )
                ).all()
            )

    async def ended(self, spec: JobSpec, count: int, timeout: float = 30.0) -> list[Any]:
        """Wait until `count` runs of the job have ended; returns them."""

        async def done() -> list[Any] | None:
            rows = await self.runs(spec)
            ended = [r for r in rows if r.state in ("succeeded", "failed", "removed")]
            return rows if len(ended) >= count else None

        return await wait_for(done, timeout)


async def _true(value: bool) -> bool | None:
    return True if value else None


async def wait_for(probe: Callable[[], Awaitable[T | None]], timeout: float = 30.0) -> T:
    """Poll `probe` until it returns something other than None."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {probe}")
        await asyncio.sleep(0.05)


def _scripts(workdir: Path) -> None:
    target = workdir / "scripts"
    shutil.copytree(ROOT / "scripts", target)
    for script in (Path(__file__).parent / "scripts").iterdir():
        shutil.copy2(script, target / script.name)


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this process: the kernel may offer a
    port again as soon as its probe closes, and two services of one stack, started together,
    must not get the same one (the second would die binding it)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def copy_scripts(workdir: Path) -> None:
    """The shipped scripts plus the test scripts, in one scripts directory."""
    target = workdir / "scripts"
    shutil.copytree(ROOT / "scripts", target)
    for script in (ROOT / "tests" / "acceptance" / "scripts").iterdir():
        shutil.copy2(script, target / script.name)


@contextlib.asynccontextmanager
async def running_stack(
    amqp_url: str,
    postgres_url: str,
    template_database: str,
    workdir: Path,
    *,
    executors: int = 2,
    concurrency: int = 2,
    env: dict[str, str] | None = None,
) -> AsyncIterator[Stack]:
    """A stack with one matcher and `executors` executors, torn down afterwards."""
    namespace = f"jmtest-{uuid.uuid4().hex[:10]}"
    name = f"jmtest_{uuid.uuid4().hex[:12]}"
    await admin_execute(postgres_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    copy_scripts(workdir)
    topology = Topology(namespace, events_exchange=f"{namespace}.cm-events")
    connection = await aio_pika.connect_robust(amqp_url)
    await topology.declare(await connection.channel())
    engine = create_engine(database_on(postgres_url, name), pool_size=4)
    stack = Stack(
        amqp_url,
        database_on(postgres_url, name),
        topology,
        workdir,
        engine,
        connection,
        await Publisher.open(connection, topology),
        extra_env=env or {},
    )
    stack.start("matcher", "jobmanager.matcher")
    for n in range(1, executors + 1):
        stack.start(f"executor-{n}", "jobmanager.executor", "--concurrency", str(concurrency))
    try:
        await wait_for(lambda: _true(stack.log("matcher").count("consuming") > 0), 30)

        async def executors_ready() -> bool | None:
            return await _true(await stack.consumers(topology.work_queue) == executors)

        await wait_for(executors_ready, 30)
        yield stack
    finally:
        stack.stop_all()
        await engine.dispose()
        cleanup = await connection.channel()
        await topology.delete(cleanup)
        await cleanup.exchange_delete(topology.events_exchange)
        await connection.close()
        await admin_execute(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

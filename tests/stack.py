"""A running Job Manager made of real processes (matchers, executors) against the real
broker and database, in an AMQP namespace and a database of its own.

The acceptance tests share one stack per module; the fault tests start one per test and
disturb it (kill -9, restarts). What starts and stops the processes is the test kit's
(`jobmanager.testkit.stack`); this adds what the tests drive and observe it with.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.broker import Publisher
from jobmanager.core.messages import Event
from jobmanager.jobs.spec import JobSpec
from jobmanager.store import jobs as job_store
from jobmanager.store import settings as store_settings
from jobmanager.store.db import create_engine
from jobmanager.store.models import Attempt, Run
from jobmanager.testkit import databases, namespaces
from jobmanager.testkit import stack as kit
from jobmanager.testkit.namespaces import queue_counts
from jobmanager.testkit.processes import processes
from jobmanager.testkit.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


@dataclass(kw_only=True)
class Stack(kit.Stack):
    """The kit's stack with what the tests drive it with: an engine on its database, a
    robust connection and a publisher, and helpers for jobs, events and runs."""

    database_url: str
    workdir: Path
    engine: AsyncEngine
    connection: AbstractRobustConnection
    publisher: Publisher

    async def consumers(self, queue: str) -> int:
        return (await queue_counts(self.connection, queue))[0]

    async def depth(self, queue: str) -> int:
        """Messages ready in a queue."""
        return (await queue_counts(self.connection, queue))[1]

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
        await self.reloaded(before)

    async def set_interval(self, seconds: float) -> None:
        before = self.log("matcher").count("catalogue loaded")
        async with self.engine.begin() as conn:
            await store_settings.save(
                conn, "queue", store_settings.QueueSettings(interval_s=seconds)
            )
        await self.publisher.broadcast_change("settings")
        await self.reloaded(before)

    async def reloaded(self, before: int) -> None:
        """Wait until the matcher's log shows more catalogue loads than `before`."""

        async def more() -> bool | None:
            return True if self.log("matcher").count("catalogue loaded") > before else None

        await wait_for(more, what="the matcher's catalogue reload")

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

        return await wait_for(done, timeout, what=f"{count} ended runs of {spec.name}")


def copy_scripts(workdir: Path) -> Path:
    """The shipped scripts plus the test scripts, in one scripts directory; its path."""
    target = workdir / "scripts"
    shutil.copytree(ROOT / "scripts", target)
    for script in (ROOT / "tests" / "acceptance" / "scripts").iterdir():
        shutil.copy2(script, target / script.name)
    return target


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
    async with (
        databases.clone(postgres_url, template_database) as database_url,
        namespaces.namespace(amqp_url) as topology,
        processes(workdir) as group,
    ):
        settings = {
            **kit.service_env(
                amqp_url,
                topology,
                database_url,
                scripts_dir=copy_scripts(workdir),
                log_level="DEBUG",
            ),
            "IPX_CONFIG_PATH": str(workdir / "ipx.json"),
            "JOBMANAGER_SCRIPT_ENV": "IPX_CONFIG_PATH",
            **(env or {}),
        }
        connection = await aio_pika.connect_robust(amqp_url)
        engine = create_engine(database_url, pool_size=4)
        try:
            running = Stack(
                amqp_url=amqp_url,
                topology=topology,
                processes=group,
                env=settings,
                metrics={},
                database_url=database_url,
                workdir=workdir,
                engine=engine,
                connection=connection,
                publisher=await Publisher.open(connection, topology),
            )
            await running.serve(
                connection,
                deciders={"matcher": [kit.MATCHER]},
                consumes_last=topology.lost_queue,
                executors=executors,
                concurrency=concurrency,
            )
            yield running
        finally:
            await group.stop_all()
            await engine.dispose()
            await connection.close()

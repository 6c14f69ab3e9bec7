"""Our services as processes (matchers and executors) in a namespace and database of their
own, with the bench job registered, and what the driver needs to load and observe them;
`serving` alone starts executors with a stand-in for the matchers (`bench.skeleton`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractConnection

from bench.infra import ROOT, Infra, database, namespace, processes
from bench.traffic import EVENT_TYPE, ConfirmedPublisher
from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import JobSpec
from jobmanager.store import jobs as job_store
from jobmanager.store import settings as store_settings
from jobmanager.store.db import create_engine, plain_url
from jobmanager.testkit import stack as kit
from jobmanager.testkit.processes import Process

# Services log at WARNING, as Celery's worker does by default: what is measured is the
# pipeline, not the cost of writing two INFO lines per run to a file.
LOG_LEVEL = "WARNING"

BENCH_JOB = JobSpec.model_validate(
    {
        "name": "bench-noop",
        "trigger": {
            "event_type": EVENT_TYPE,
            "conditions": [{"path": "data.channel.origin", "op": "eq", "value": "avcm"}],
        },
        "script": "noop",
        "command_template": "{{ data.channel | tojson }}",
        "lane": "{{ data.lane }}",
    }
)


@dataclass(kw_only=True)
class Stack(kit.Stack):
    """Deciders (our matchers, or a stand-in for them) and our executors consuming one
    namespace, the driver's publisher on its events exchange and, with our matchers, a
    connection to their database."""

    publisher: ConfirmedPublisher
    db: asyncpg.Connection | None = None

    @property
    def matchers(self) -> list[Process]:
        return self.deciders

    async def succeeded(self) -> int:
        assert self.db is not None, "a stand-in keeps its own count"
        value = await self.db.fetchval("SELECT count(*) FROM runs WHERE state = 'succeeded'")
        return int(value)


def service_env(
    infra: Infra, topology: Topology, database_url: str | None = None
) -> dict[str, str]:
    """The settings of our services (the executor has no database)."""
    env = kit.service_env(
        infra.amqp_url,
        topology,
        database_url,
        scripts_dir=ROOT / "scripts",
        log_level=LOG_LEVEL,
    )
    return {**env, **infra.settings}


async def _configure(database_url: str, interval_s: float) -> None:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await job_store.upsert(conn, BENCH_JOB)
            await store_settings.save(
                conn, "queue", store_settings.QueueSettings(interval_s=interval_s)
            )
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def serving(
    infra: Infra,
    connection: AbstractConnection,
    topology: Topology,
    env: dict[str, str],
    *,
    deciders: dict[str, Sequence[str]],
    consumes_last: str,
    executors: int,
    concurrency: int,
) -> AsyncIterator[Stack]:
    """The deciders (name: module and arguments) and `executors` executors started with
    `env`, once each decider consumes `consumes_last` (the queue it starts consuming last)
    and each executor the work queue; all stopped afterwards."""
    async with processes(infra, connection) as group:
        channel = await connection.channel(publisher_confirms=True)
        try:
            services = Stack(
                amqp_url=infra.amqp_url,
                topology=topology,
                processes=group,
                env=env,
                publisher=await ConfirmedPublisher.open(channel, topology.events_exchange),
            )
            await services.serve(
                connection,
                deciders=deciders,
                consumes_last=consumes_last,
                executors=executors,
                concurrency=concurrency,
            )
            yield services
        finally:
            with contextlib.suppress(Exception):
                await channel.close()


@contextlib.asynccontextmanager
async def running(
    infra: Infra,
    connection: AbstractConnection,
    *,
    executors: int,
    concurrency: int,
    matchers: int = 1,
    interval_s: float = 0.0,
) -> AsyncIterator[Stack]:
    """`matchers` matchers and `executors` executors, consuming, with the bench job and the
    interval stored before the matchers start; everything removed afterwards."""
    async with database(infra) as url, namespace(infra) as topology:
        await _configure(url, interval_s)
        async with serving(
            infra,
            connection,
            topology,
            service_env(infra, topology, url),
            deciders={f"matcher-{n}": [kit.MATCHER] for n in range(1, matchers + 1)},
            # A matcher starts its consumers in order; the lost queue's is the last.
            consumes_last=topology.lost_queue,
            executors=executors,
            concurrency=concurrency,
        ) as stack:
            stack.db = await asyncpg.connect(plain_url(url))
            try:
                yield stack
            finally:
                await stack.db.close()

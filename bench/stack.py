"""Our services as processes (matchers and executors) in a namespace and database of their
own, with the bench job registered, and what the driver needs to load and observe them;
`serving` alone starts executors with a stand-in for the matchers (`bench.skeleton`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aio_pika.abc import AbstractConnection

from bench.infra import (
    ROOT,
    Infra,
    Process,
    Processes,
    database,
    namespace,
    processes,
    queue_counts,
    wait_for,
)
from bench.traffic import EVENT_TYPE, ConfirmedPublisher
from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import JobSpec
from jobmanager.store import jobs as job_store
from jobmanager.store import settings as store_settings
from jobmanager.store.db import create_engine, plain_url

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


@dataclass
class Stack:
    infra: Infra
    topology: Topology
    database_url: str
    db: asyncpg.Connection
    group: Processes
    matchers: list[Process]
    executors: list[Process]
    publisher: ConfirmedPublisher

    async def succeeded(self) -> int:
        value = await self.db.fetchval("SELECT count(*) FROM runs WHERE state = 'succeeded'")
        return int(value)


def service_env(
    infra: Infra, topology: Topology, database_url: str | None = None
) -> dict[str, str]:
    """The settings of our services (the executor has no database)."""
    env = {
        "JOBMANAGER_AMQP_URL": infra.amqp_url,
        "JOBMANAGER_NAMESPACE": topology.namespace,
        "JOBMANAGER_EVENTS_EXCHANGE": topology.events_exchange,
        "JOBMANAGER_SCRIPTS_DIR": str(ROOT / "scripts"),
        "JOBMANAGER_LOG_LEVEL": LOG_LEVEL,
    }
    if database_url is not None:
        env["JOBMANAGER_DATABASE_URL"] = database_url
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


@dataclass
class Services:
    """Deciders (our matchers, or a stand-in for them) and our executors consuming one
    namespace, and the driver's publisher on its events exchange."""

    topology: Topology
    group: Processes
    deciders: list[Process]
    executors: list[Process]
    publisher: ConfirmedPublisher


@contextlib.asynccontextmanager
async def serving(
    infra: Infra,
    connection: AbstractConnection,
    topology: Topology,
    env: dict[str, str],
    *,
    deciders: dict[str, list[str]],
    consumes_last: str,
    executors: int,
    concurrency: int,
) -> AsyncIterator[Services]:
    """The deciders (name: argv) and `executors` executors started with `env`, once each
    decider consumes `consumes_last` (the queue it starts consuming last) and each executor
    the work queue; all stopped afterwards."""
    async with processes(infra, connection) as group:
        started = [group.start(name, argv, env) for name, argv in deciders.items()]
        workers = [
            group.start(
                f"executor-{n}",
                ["-m", "jobmanager.executor", "--concurrency", str(concurrency)],
                env,
            )
            for n in range(1, executors + 1)
        ]

        async def ready() -> bool | None:
            if (await queue_counts(connection, consumes_last))[0] < len(started):
                return None
            if (await queue_counts(connection, topology.work_queue))[0] < executors:
                return None
            return True

        await wait_for(ready, timeout=60, what="the services", alive=group.check_alive)
        channel = await connection.channel(publisher_confirms=True)
        try:
            publisher = await ConfirmedPublisher.open(channel, topology.events_exchange)
            yield Services(topology, group, started, workers, publisher)
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
            deciders={f"matcher-{n}": ["-m", "jobmanager.matcher"] for n in range(1, matchers + 1)},
            # A matcher starts its consumers in order; the lost queue's is the last.
            consumes_last=topology.lost_queue,
            executors=executors,
            concurrency=concurrency,
        ) as services:
            db = await asyncpg.connect(plain_url(url))
            try:
                yield Stack(
                    infra,
                    topology,
                    url,
                    db,
                    services.group,
                    services.deciders,
                    services.executors,
                    services.publisher,
                )
            finally:
                await db.close()

"""Baselines: Celery running a no-op task on the same RabbitMQ, results in the same Postgres.

The worker is a process of its own (prefork, one child per core, acks_late); the results go
to a database of the run's own through Celery's database backend. Tasks/s is measured like
our runs/s: from the first publish to the moment the database holds every result.

Two configurations of the one measurement: Celery's default classic queue, and the quorum
queue (with confirmed publishes) that a user who wants the replication our queues have would
run (`bench.celery_app.make_app`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aio_pika.abc import AbstractConnection

from bench import cpu
from bench.celery_app import TASK, QueueType, make_app
from bench.cpu import Usage
from bench.infra import Infra, MeasurementError, database, processes
from bench.stats import median, spread
from jobmanager.store.db import plain_url
from jobmanager.testkit.namespaces import delete_queues, queue_counts, unique
from jobmanager.testkit.waiting import wait_for

POLL_S = 0.1


@dataclass(frozen=True)
class CeleryResult:
    queue_type: QueueType
    tasks_per_s: float
    repetitions: list[float]
    tasks: int
    concurrency: int
    cpu: Usage

    def note(self) -> str:
        queue = (
            "quorum queue, confirmed publishes" if self.queue_type == "quorum" else "classic queue"
        )
        return (
            f"{self.tasks:,} tasks per repetition, {queue}, prefork x{self.concurrency}, "
            f"acks_late, database backend; {spread(self.repetitions)} tasks/s; "
            + self.cpu.note().replace("per run", "per task")
        )


def backend_url(database_url: str) -> str:
    return "db+postgresql+psycopg://" + database_url.split("://", 1)[1]


async def _succeeded(conn: asyncpg.Connection) -> int:
    value = await conn.fetchval("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
    return int(value)


async def _until_done(
    conn: asyncpg.Connection, target: int, alive: Callable[[], None], timeout: float
) -> float:
    """Poll the result table until it holds `target` successes; the perf_counter then."""

    async def done() -> float | None:
        return time.perf_counter() if await _succeeded(conn) >= target else None

    return await wait_for(
        done, timeout=timeout, what="Celery's results", interval=POLL_S, alive=alive
    )


def _publish(app: Any, count: int) -> list[str]:
    ids = []
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            ids.append(app.send_task(TASK, producer=producer).id)
    return ids


async def measure(
    infra: Infra,
    connection: AbstractConnection,
    *,
    queue_type: QueueType,
    seconds: float,
    max_tasks: int,
    repetitions: int,
    warmup: int,
) -> CeleryResult:
    """Tasks/s through a queue of `queue_type`; each repetition sends about `seconds` worth of
    tasks at the warm-up's rate (at least 500, at most `max_tasks`)."""
    concurrency = os.cpu_count() or 1
    queue = f"{unique('bench')}.celery-{queue_type}"
    async with database(infra, migrated=False) as url:
        app = make_app(
            broker=infra.amqp_url, backend=backend_url(url), queue=queue, queue_type=queue_type
        )
        await asyncio.to_thread(lambda: app.backend)  # creates Celery's result tables
        conn = await asyncpg.connect(plain_url(url))
        try:
            async with processes(infra, connection) as group:
                worker = group.start(
                    f"celery-{queue_type}-worker",
                    [
                        "-m",
                        "bench.celery_app",
                        infra.amqp_url,
                        backend_url(url),
                        queue,
                        queue_type,
                        str(concurrency),
                    ],
                    {},
                )

                async def consuming() -> bool | None:
                    return True if (await queue_counts(connection, queue))[0] >= 1 else None

                await wait_for(
                    consuming, timeout=60, what="the Celery worker", alive=group.check_alive
                )
                start = time.perf_counter()
                await asyncio.to_thread(_publish, app, warmup)
                end = await _until_done(conn, warmup, group.check_alive, 120)
                tasks = max(500, min(max_tasks, round(warmup / (end - start) * seconds)))
                rates = []
                before = cpu.sample({"worker": [worker.pid]})
                for _ in range(repetitions):
                    base = await _succeeded(conn)
                    start = time.perf_counter()
                    ids = await asyncio.to_thread(_publish, app, tasks)
                    end = await _until_done(conn, base + tasks, group.check_alive, 600)
                    rates.append(tasks / (end - start))
                used = cpu.usage(before, cpu.sample({"worker": [worker.pid]}), tasks * repetitions)
                # The results are really there, as a client waiting on one would see it.
                sample = app.AsyncResult(ids[-1])
                await asyncio.to_thread(sample.get, timeout=10)
                if sample.state != "SUCCESS":
                    raise MeasurementError(f"a Celery task ended {sample.state}")
        finally:
            await conn.close()
            app.close()
            await delete_queues(infra.amqp_url, queue, exchanges=[queue])
    return CeleryResult(queue_type, median(rates), rates, tasks, concurrency, used)

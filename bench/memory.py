"""Executor resident memory when idle: VmRSS of the process and its descendants.

An executor is started in a namespace of its own, waits until it consumes the work queue,
then sits idle (it has sent its first `executor.report`); its memory is sampled for a few
seconds. Python workers start on the first run, so an idle executor has no children.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aio_pika.abc import AbstractConnection

from bench.infra import Infra, namespace, processes, tree_rss_mb
from bench.stack import service_env
from bench.stats import median
from jobmanager.testkit.namespaces import queue_counts
from jobmanager.testkit.waiting import wait_for

SAMPLES = 10


@dataclass(frozen=True)
class Memory:
    rss_mb: float
    children: int
    concurrency: int

    def note(self) -> str:
        return (
            f"VmRSS of the executor (--concurrency {self.concurrency}) and its "
            f"{self.children} children, median of {SAMPLES} samples over {SAMPLES * 0.3:.0f} s"
        )


async def measure(infra: Infra, connection: AbstractConnection, *, concurrency: int) -> Memory:
    async with namespace(infra) as topology, processes(infra, connection) as group:
        env = service_env(infra, topology)
        executor = group.start(
            "executor-idle",
            ["-m", "jobmanager.executor", "--concurrency", str(concurrency)],
            env,
        )

        async def consuming() -> bool | None:
            return True if (await queue_counts(connection, topology.work_queue))[0] else None

        await wait_for(consuming, timeout=60, what="the executor", alive=group.check_alive)
        await asyncio.sleep(2)  # settle: the start-up report is sent, nothing else to do
        samples = []
        children = 0
        for _ in range(SAMPLES):
            rss, children = tree_rss_mb(executor.pid)
            samples.append(rss)
            await asyncio.sleep(0.3)
    return Memory(median(samples), children, concurrency)

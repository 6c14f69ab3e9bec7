"""Baseline: the raw aio-pika relay, the per-hop limit of this machine.

Queue A is filled first; then the relay process (`bench.relay_process`) is told to go, and
the driver polls queue B until it holds every message. Both queues are quorum queues with
persistent messages, like the queues of our pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from bench import cpu
from bench.cpu import Usage
from bench.infra import Infra, MeasurementError, processes
from bench.stats import median, percentile, spread
from bench.traffic import ConfirmedPublisher, encode, event
from jobmanager.testkit.namespaces import delete_queues, queue_counts, unique
from jobmanager.testkit.waiting import wait_for

PREFETCH = 1000
HOP_SAMPLES = 200


@dataclass(frozen=True)
class RelayResult:
    msgs_per_s: float
    repetitions: list[float]
    messages: int
    cpu: Usage  # of the last repetition
    hop_p50_ms: float  # one message at a time: publish -> delivered to a consumer
    hop_p99_ms: float
    hops: int

    def note(self) -> str:
        return (
            f"{self.messages:,} msgs, prefetch {PREFETCH}; {spread(self.repetitions)} msg/s; "
            + self.cpu.note().replace("per run", "per message")
        )


async def _once(infra: Infra, connection: AbstractConnection, messages: int) -> tuple[float, Usage]:
    prefix = unique("bench")
    source, target = f"{prefix}.relay.a", f"{prefix}.relay.b"
    channel = await connection.channel(publisher_confirms=True)
    for name in (source, target):
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        async with processes(infra, connection) as group:
            worker = group.start(
                "relay",
                ["-m", "bench.relay_process", infra.amqp_url, source, target, str(PREFETCH)],
                {},
            )

            async def ready() -> bool | None:
                return True if "ready" in worker.tail(5) else None

            await wait_for(ready, timeout=30, what="the relay process", alive=group.check_alive)
            publisher = await ConfirmedPublisher.open(channel, "")
            body = encode(event("relay"))
            await publisher.many(source, [body] * messages)
            if (await queue_counts(connection, source))[1] != messages:
                raise MeasurementError("queue A does not hold the messages just published")
            assert worker.popen.stdin is not None
            before = cpu.sample({"relay": [worker.pid]})
            start = time.perf_counter()
            worker.popen.stdin.write(b"go\n")
            worker.popen.stdin.flush()

            async def relayed() -> float | None:
                if (await queue_counts(connection, target))[1] >= messages:
                    return time.perf_counter() - start
                return None

            elapsed = await wait_for(
                relayed, timeout=300, what="the relay", interval=0.02, alive=group.check_alive
            )
            return messages / elapsed, cpu.usage(
                before, cpu.sample({"relay": [worker.pid]}), messages
            )
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
        await delete_queues(infra.amqp_url, source, target)


async def measure(
    infra: Infra, connection: AbstractConnection, *, messages: int, repetitions: int
) -> RelayResult:
    rates = []
    for _ in range(repetitions):
        rate, used = await _once(infra, connection, messages)
        rates.append(rate)
        await asyncio.sleep(0.5)
    hops = await hop_latency(infra, connection, samples=HOP_SAMPLES)
    return RelayResult(
        median(rates), rates, messages, used, percentile(hops, 50), percentile(hops, 99), len(hops)
    )


async def hop_latency(infra: Infra, connection: AbstractConnection, *, samples: int) -> list[float]:
    """One message at a time through a quorum queue (persistent, confirmed): milliseconds
    from publish to delivery to a consumer. The floor of every hop of our pipeline."""
    queue_name = f"{unique('bench')}.hop"
    publishing = await connection.channel(publisher_confirms=True)
    consuming = await connection.channel()
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        arrived.put_nowait(time.perf_counter())
        await message.ack()

    try:
        queue = await consuming.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.consume(on_message)
        publisher = await ConfirmedPublisher.open(publishing, "")
        body = encode(event("hop"))
        latencies = []
        for _ in range(samples):
            start = time.perf_counter()
            await publisher.one(queue_name, body)
            latencies.append((await asyncio.wait_for(arrived.get(), 10) - start) * 1000)
            await asyncio.sleep(0.01)
        return latencies
    finally:
        for channel in (consuming, publishing):
            with contextlib.suppress(Exception):
                await channel.close()
        await delete_queues(infra.amqp_url, queue_name)

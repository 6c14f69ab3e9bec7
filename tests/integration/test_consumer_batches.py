"""The consumer's batches against the real RabbitMQ (at low load, a batch is one message).

Each test consumes its topology's events queue on a connection of its own, closed at the end:
whatever the consumer left unacked is then back in the queue, so `_ready == 0` after the
close proves every message was acked (or parked).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError

from jobmanager.core import consumer as consuming
from jobmanager.core.broker import Publisher, connect
from jobmanager.core.consumer import Consumer, Handler, Later
from jobmanager.core.topology import ERROR_HEADER, Topology


def _n(message: AbstractIncomingMessage) -> int:
    return int(message.body)


async def _publish(amqp: AbstractRobustConnection, queue: str, numbers: range | list[int]) -> None:
    """Publish one message per number, confirmed, straight to `queue`."""
    channel = await amqp.channel()
    try:
        await asyncio.gather(
            *(
                channel.default_exchange.publish(aio_pika.Message(str(n).encode()), queue)
                for n in numbers
            )
        )
    finally:
        await channel.close()


async def _ready(amqp: AbstractRobustConnection, queue: str) -> int:
    """Messages ready in the queue (delivered but unacked ones are not counted)."""
    channel = await amqp.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.message_count is not None
        return declared.declaration_result.message_count
    finally:
        await channel.close()


async def _drain_dead(amqp: AbstractRobustConnection, topology: Topology) -> list[tuple[int, str]]:
    """The parked messages (number, reason), taken off the dead queue."""
    channel = await amqp.channel()
    parked = []
    try:
        queue = await channel.get_queue(topology.dead_queue)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            parked.append((_n(message), str((message.headers or {}).get(ERROR_HEADER, ""))))
    finally:
        await channel.close()
    return parked


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


async def _until_async(
    probe: Callable[[], Awaitable[int]], expected: int, timeout: float = 10.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (value := await probe()) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"still {value}, not {expected}"
        await asyncio.sleep(0.01)


@dataclass
class Rig:
    consumer: Consumer
    stopped: bool = False

    async def stop(self) -> None:
        self.stopped = True
        await self.consumer.stop(timeout=10)


@asynccontextmanager
async def consumer_on(
    amqp_url: str,
    topology: Topology,
    handler: Handler,
    *,
    prefetch: int,
    **options: Any,
) -> AsyncIterator[Rig]:
    """A batch consumer of the events queue on its own connection, closed on the way out."""
    connection = await connect(amqp_url, name="test-consumer-batches")
    try:
        publisher = await Publisher.open(connection, topology)
        rig = Rig(Consumer("test", handler, publisher, **options))
        await rig.consumer.start(connection, topology.events_queue, prefetch=prefetch)
        try:
            yield rig
        finally:
            if not rig.stopped:
                await rig.stop()
    finally:
        await connection.close()


@dataclass
class Seen:
    """What the handlers were given."""

    batches: list[list[int]] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)

    def alone_after(self, failed: list[int]) -> list[int]:
        """The messages of a failed batch handled again, each alone."""
        later = self.batches[self.batches.index(failed) + 1 :]
        return sorted(b[0] for b in later if len(b) == 1 and b[0] in failed)


async def test_messages_piled_up_under_load_are_handled_in_batches(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    total, max_batch = 300, 100
    seen = Seen()

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        seen.batches.append([_n(m) for m in messages])
        await consuming.ack(messages)
        seen.acked.extend(_n(m) for m in messages)
        return []

    # All in the queue before the consumer starts: the deliveries arrive faster than a
    # batch is handled, so they must pile up into batches.
    await _publish(amqp, topology.events_queue, range(total))
    async with consumer_on(amqp_url, topology, batch, prefetch=total, max_batch=max_batch) as rig:
        await _until(lambda: len(seen.acked) >= total)
        await rig.stop()

    assert Counter(seen.acked) == Counter(range(total))  # each exactly once
    sizes = [len(b) for b in seen.batches]
    assert max(sizes) > 1, sizes
    assert max(sizes) <= max_batch, sizes
    assert await _drain_dead(amqp, topology) == []
    assert await _ready(amqp, topology.events_queue) == 0


async def test_no_more_than_the_allowed_number_of_batches_run_at_once(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    total = 60
    seen = Seen()
    running, most = 0, 0

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)  # slow enough for the batches to overlap
        await consuming.ack(messages)
        seen.acked.extend(_n(m) for m in messages)
        running -= 1
        return []

    await _publish(amqp, topology.events_queue, range(total))
    async with consumer_on(
        amqp_url, topology, batch, prefetch=total, max_batch=5, batches=2
    ) as rig:
        await _until(lambda: len(seen.acked) >= total)
        await rig.stop()

    assert most == 2
    assert Counter(seen.acked) == Counter(range(total))
    assert await _ready(amqp, topology.events_queue) == 0


async def test_a_message_alone_at_low_load_is_handled_without_waiting(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    seen = Seen()
    handled = asyncio.Event()

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        seen.batches.append([_n(m) for m in messages])
        await consuming.ack(messages)
        handled.set()
        return []

    async with consumer_on(amqp_url, topology, batch, prefetch=100) as rig:
        await asyncio.sleep(0.2)  # idle: consuming, nothing in the queue
        loop = asyncio.get_running_loop()
        # Several in a row: a consumer that held a lone message back for company (or for a
        # timer) would be late every time. The bound is generous for a slow shared machine.
        for n in range(3):
            handled.clear()
            started = loop.time()
            await _publish(amqp, topology.events_queue, [n])
            await asyncio.wait_for(handled.wait(), 5)
            elapsed = loop.time() - started
            assert elapsed < 1.0, f"message {n} took {elapsed:.3f} s"
        await rig.stop()

    assert seen.batches == [[0], [1], [2]]
    assert await _ready(amqp, topology.events_queue) == 0


async def test_an_unexpected_error_in_a_batch_parks_only_the_message_at_fault(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    total, bad = 20, 10
    seen = Seen()
    failed: list[list[int]] = []

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        numbers = [_n(m) for m in messages]
        seen.batches.append(numbers)
        if bad in numbers:
            failed.append(numbers)
            raise ValueError(f"cannot digest message {bad}")
        # Slow clean batches let the deliveries pile up, so the poisoned one has company.
        await asyncio.sleep(0.05)
        await consuming.ack(messages)
        seen.acked.extend(numbers)
        return []

    await _publish(amqp, topology.events_queue, range(total))
    async with consumer_on(amqp_url, topology, batch, prefetch=total) as rig:
        await _until(lambda: len(seen.acked) >= total - 1)
        await rig.stop()

    assert len(failed) == 2 and failed[1] == [bad], failed
    good_of_failed = [n for n in failed[0] if n != bad]
    assert good_of_failed, "the poisoned message was alone in its batch: nothing was proven"
    # The failed batch was handled again one message at a time, each good one exactly once.
    assert seen.alone_after(failed[0]) == sorted(failed[0])
    assert Counter(seen.acked) == Counter(n for n in range(total) if n != bad)
    parked = await _drain_dead(amqp, topology)
    assert [n for n, _ in parked] == [bad]
    assert "ValueError" in parked[0][1]
    assert f"cannot digest message {bad}" in parked[0][1]
    assert await _ready(amqp, topology.events_queue) == 0


async def test_messages_acked_before_an_unexpected_error_are_not_handled_again(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    total, bad = 20, 10
    seen = Seen()
    failed: list[list[int]] = []

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        numbers = [_n(m) for m in messages]
        seen.batches.append(numbers)
        if bad not in numbers:
            await asyncio.sleep(0.05)  # let the deliveries pile up
        # Ack as it goes, and fail on reaching the poisoned message.
        for message in messages:
            if _n(message) == bad:
                failed.append(numbers)
                raise ValueError(f"cannot digest message {bad}")
            await message.ack()
            seen.acked.append(_n(message))
        return []

    await _publish(amqp, topology.events_queue, range(total))
    async with consumer_on(amqp_url, topology, batch, prefetch=total) as rig:
        await _until(lambda: len(seen.acked) >= total - 1)
        await rig.stop()

    assert len(failed) == 2 and failed[1] == [bad], failed
    # Only what the failed batch left unacked (from the poisoned message on) goes one by one.
    position = failed[0].index(bad)
    assert seen.alone_after(failed[0]) == sorted(failed[0][position:])
    assert Counter(seen.acked) == Counter(n for n in range(total) if n != bad)
    assert [n for n, _ in await _drain_dead(amqp, topology)] == [bad]
    assert await _ready(amqp, topology.events_queue) == 0


class DatabaseRestarting(Exception):
    """Stands for a transient failure of the database."""


async def test_a_batch_failing_transiently_is_retried_as_a_whole(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    total = 10
    seen = Seen()
    failures: list[list[int]] = []
    redelivered: list[int] = []

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        numbers = [_n(m) for m in messages]
        seen.batches.append(numbers)
        if not failures:
            failures.append(numbers)
            raise DatabaseRestarting("the database is restarting")
        redelivered.extend(_n(m) for m in messages if m.redelivered)
        await consuming.ack(messages)
        seen.acked.extend(numbers)
        return []

    await _publish(amqp, topology.events_queue, range(total))
    async with consumer_on(
        amqp_url,
        topology,
        batch,
        prefetch=total,
        transient=lambda exc: isinstance(exc, DatabaseRestarting),
    ) as rig:
        await _until(lambda: len(seen.acked) >= total)
        await rig.stop()

    # The very batch that failed came again (not one message at a time, not parked)...
    assert seen.batches[1] == failures[0]
    assert Counter(seen.acked) == Counter(range(total))
    # ...held unacked meanwhile rather than given back to the broker.
    assert redelivered == []
    assert await _drain_dead(amqp, topology) == []
    assert await _ready(amqp, topology.events_queue) == 0


async def test_messages_handed_back_are_handled_again_alone_after_their_delay(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    total, delay = 30, 0.3
    seen = Seen()
    loop = asyncio.get_running_loop()
    first_seen: dict[int, float] = {}
    again: dict[int, float] = {}

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        seen.batches.append([_n(m) for m in messages])
        for m in messages:
            if _n(m) in first_seen:
                again[_n(m)] = loop.time()
            else:
                first_seen[_n(m)] = loop.time()
        later = [m for m in messages if _n(m) % 3 == 0 and _n(m) not in again]
        mine = [m for m in messages if m not in later]
        await consuming.ack(mine)
        seen.acked.extend(_n(m) for m in mine)
        return [(m, delay) for m in later]

    await _publish(amqp, topology.events_queue, range(total))
    async with consumer_on(amqp_url, topology, batch, prefetch=total) as rig:
        await _until(lambda: len(seen.acked) >= total)
        await rig.stop()

    assert sorted(again) == list(range(0, total, 3))
    assert all(again[n] - first_seen[n] >= delay * 0.9 for n in again), "not before the delay"
    assert all([n] in seen.batches for n in again), "each handled again alone"
    assert Counter(seen.acked) == Counter(range(total))
    assert await _drain_dead(amqp, topology) == []
    assert await _ready(amqp, topology.events_queue) == 0


async def test_stop_finishes_the_messages_in_hand_before_it_returns(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    total = 12
    seen = Seen()
    first_batch = asyncio.Event()

    handed_back: set[int] = set()

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        first_batch.set()
        await asyncio.sleep(0.2)  # work in progress when stop() comes
        if len(messages) == 1 and _n(messages[0]) in handed_back:
            await consuming.ack(messages)
            seen.acked.append(_n(messages[0]))
            return []
        # The first of each batch goes on alone: stop() must wait for those tasks too.
        await consuming.ack(messages[1:])
        seen.acked.extend(_n(m) for m in messages[1:])
        handed_back.add(_n(messages[0]))
        return [(messages[0], 0.0)]

    await _publish(amqp, topology.events_queue, range(total))
    async with consumer_on(amqp_url, topology, batch, prefetch=total, max_batch=4) as rig:
        await asyncio.wait_for(first_batch.wait(), 5)
        # Everything is in the consumer's hands (delivered, none ready) before it stops.
        await _until_async(lambda: _ready(amqp, topology.events_queue), 0)
        in_hand = total - len(seen.acked)
        await rig.stop()
        done_when_stopped = Counter(seen.acked)
    # The connection is closed: anything left unacked would be ready again now.

    assert in_hand > 0, "nothing was in hand when stop() came: nothing was proven"
    assert done_when_stopped == Counter(range(total))
    assert await _ready(amqp, topology.events_queue) == 0


async def _consumers(amqp: AbstractRobustConnection, queue: str) -> int:
    channel = await amqp.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        assert declared.declaration_result.consumer_count is not None
        return declared.declaration_result.consumer_count
    finally:
        await channel.close()


def _dead(message: AbstractIncomingMessage) -> bool:
    try:
        message.channel  # noqa: B018 (raises once the channel is closed)
    except ChannelInvalidStateError:
        return True
    return False


async def test_a_lost_channel_hands_back_only_the_deliveries_of_its_successor(
    amqp: AbstractRobustConnection, amqp_url: str, topology: Topology
) -> None:
    seen = Seen()
    batches: list[list[tuple[int, bool]]] = []
    held: list[AbstractIncomingMessage] = []
    first_in, go = asyncio.Event(), asyncio.Event()

    async def batch(messages: list[AbstractIncomingMessage]) -> Later:
        batches.append([(_n(m), m.redelivered) for m in messages])
        if len(batches) == 1:
            held.extend(messages)
            first_in.set()
            await go.wait()
        for message in messages:  # plain acks: the first of a dead channel raises
            await message.ack()
            seen.acked.append(_n(message))
        return []

    queue = topology.events_queue
    async with consumer_on(amqp_url, topology, batch, prefetch=20) as rig:
        await _publish(amqp, queue, [0])
        await asyncio.wait_for(first_in.wait(), 5)
        # 1..4 wait behind the first batch, delivered on the first channel.
        await _publish(amqp, queue, range(1, 5))
        await _until_async(lambda: _ready(amqp, queue), 0)
        # The broker closes a channel that acks an unknown delivery tag; the robust channel
        # comes back and 0..4 are delivered again on it, behind the dead deliveries of 1..4.
        await held[0].channel.basic_ack(delivery_tag=1_000_000)
        await _until(lambda: _dead(held[0]))
        await _until_async(lambda: _consumers(amqp, queue), 1)
        await _until_async(lambda: _ready(amqp, queue), 0)
        await asyncio.sleep(0.3)  # the redeliveries reach the consumer
        go.set()
        await _until(lambda: set(seen.acked) >= set(range(5)))
        await rig.stop()

    assert batches[0] == [(0, False)]
    assert batches[1][:4] == [(n, False) for n in range(1, 5)], batches
    assert sorted(batches[1][4:]) == [(n, True) for n in range(5)], batches
    # The deliveries of the dead channel are left to the broker; those of the live channel
    # in the same batch are handled alone rather than left unacked.
    assert all(len(b) == 1 for b in batches[2:]), batches
    assert sorted(b[0] for b in batches[2:]) == [(n, True) for n in range(5)]
    assert Counter(seen.acked) == Counter(range(5))
    assert await _drain_dead(amqp, topology) == []
    assert await _ready(amqp, queue) == 0

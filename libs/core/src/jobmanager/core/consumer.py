"""A queue consumer that never crashes and never loses a message.

The handler takes a batch of deliveries: under load those that arrived while the previous
batch was being handled (at most `max_batch`, at most `batches` batches at once), so that the
ledger pays its statement once for many messages; at low load a message waits for nobody and
is a batch of one. The handler acks or parks each message itself once its work is safely
done, and may hand some back to be handled again, alone, after a delay (a request that came
a little early). Around it, one ladder:

* a transient failure (the database restarting, say) is waited out: the batch is retried
  with backoff while its messages stay unacked, so nothing is acked before its commit;
* an error of the broker (a publish not confirmed in time) is retried the same way;
* any other exception is a bug or bad data we did not foresee: a batch of several is handled
  again one message at a time, and a message alone is parked in the dead queue with the
  error as its reason, so only the message at fault is parked and consuming goes on;
* a lost broker connection abandons the batch; the broker redelivers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError
from aiormq.exceptions import AMQPConnectionError

from jobmanager.core.broker import Publisher
from jobmanager.core.metrics import REDELIVERIES

log = logging.getLogger(__name__)

# What a handler hands back: messages to handle again, each alone, after a delay in seconds.
Later = list[tuple[AbstractIncomingMessage, float]]
Handler = Callable[[list[AbstractIncomingMessage]], Awaitable[Later]]


def _never(_: BaseException) -> bool:
    return False


def _alive(message: AbstractIncomingMessage) -> bool:
    """Whether the channel the message came on is still open (so it can still be acked)."""
    try:
        message.channel  # noqa: B018 (the property raises once the channel is closed)
    except ChannelInvalidStateError:
        return False
    return True


async def ack(messages: list[AbstractIncomingMessage]) -> None:
    """Ack each message of a batch. One whose channel died meanwhile is left to the broker,
    which redelivers it; the others are still acked."""
    for message in messages:
        try:
            await message.ack()
        except (ChannelInvalidStateError, AMQPConnectionError) as exc:
            log.debug("a message's channel is gone (%s); the broker redelivers it", exc)


class Consumer:
    """Consumes one queue with manual acks; `stop()` drains the messages in hand."""

    def __init__(
        self,
        name: str,
        handler: Handler,
        publisher: Publisher,
        *,
        transient: Callable[[BaseException], bool] = _never,
        max_backoff_s: float = 5.0,
        max_batch: int = 100,
        batches: int = 1,
    ) -> None:
        self.name = name
        self._handler = handler
        self._max_batch = max_batch
        self._batches = batches
        self._pending: list[AbstractIncomingMessage] = []
        self._drainers: set[asyncio.Task[None]] = set()
        self._publisher = publisher
        self._transient = transient
        self._max_backoff_s = max_backoff_s
        self._in_flight: set[asyncio.Task[None]] = set()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._stopping = False

    async def start(
        self, connection: AbstractRobustConnection, queue_name: str, *, prefetch: int
    ) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        # A passive declare, not get_queue(ensure=False): only queues declared through the
        # robust channel get their consumers back after the broker restarts.
        self._queue = await channel.get_queue(queue_name, ensure=True)
        self._tag = await self._queue.consume(self._on_message)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages and wait (up to `timeout`) for those in hand to finish."""
        self._stopping = True
        if self._queue is not None and self._tag is not None:
            try:
                await self._queue.cancel(self._tag)
            except (AMQPError, ChannelInvalidStateError, RuntimeError) as exc:
                log.debug("%s: cancel failed (%s); the channel is closing anyway", self.name, exc)
        # Handling a batch may hand messages on to tasks of their own: wait for those too.
        deadline = asyncio.get_running_loop().time() + timeout
        while pending := {t for t in self._in_flight if not t.done()}:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(pending, timeout=left)

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self._pending.append(message)
        if len(self._drainers) < self._batches:
            drainer = asyncio.create_task(self._drain())
            self._drainers.add(drainer)
            self._in_flight.add(drainer)

    async def _drain(self) -> None:
        """Handle what is pending, batch after batch, until nothing is."""
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                REDELIVERIES.labels(self.name).inc(sum(1 for m in batch if m.redelivered))
                await self._handle(batch)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._drainers.discard(task)
                self._in_flight.discard(task)

    def _later(self, later: Later) -> None:
        for message, delay in later:
            task = asyncio.create_task(self._again(message, delay))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _again(self, message: AbstractIncomingMessage, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await self._handle([message])

    async def _handle(self, batch: list[AbstractIncomingMessage]) -> None:
        backoff = 0.05
        while True:
            # A retried batch leaves out what its failed try already acked or parked.
            batch = [m for m in batch if not m.processed]
            if not batch:
                return
            try:
                self._later(await self._handler(batch))
                return
            except Exception as exc:
                lost = isinstance(exc, ChannelInvalidStateError | AMQPConnectionError) or (
                    # A refused or reset socket is the database's when `transient` says it
                    # is worth waiting out; left alone, the message would stay unacked on a
                    # live channel for ever and, prefetch by prefetch, stop the consumer.
                    isinstance(exc, ConnectionError) and not self._transient(exc)
                )
                if lost:
                    self._lost(exc)
                    if len(batch) > 1:
                        # A batch can mix deliveries of a channel that died with those of its
                        # successor; the latter would otherwise stay unacked on a live channel.
                        self._later([(m, 0.0) for m in batch if not m.processed and _alive(m)])
                    return
                if not (self._transient(exc) or isinstance(exc, AMQPError)):
                    await self._unexpected(batch, exc)
                    return
                if self._stopping:
                    for message in batch:
                        if not message.processed:
                            await self._abandon(message)
                    return
                self._retrying(exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _unexpected(self, batch: list[AbstractIncomingMessage], exc: Exception) -> None:
        if len(batch) > 1:
            log.exception(
                "%s: unexpected error in a batch of %d; handling them one by one",
                self.name,
                len(batch),
            )
            for message in batch:
                await self._handle([message])
            return
        log.exception("%s: unexpected error; parking the message", self.name)
        await self._publisher.park(batch[0], f"internal error: {exc!r}"[:500])

    def _retrying(self, exc: BaseException, backoff: float) -> None:
        log.warning(
            "%s: %s (%s); retrying in %.2f s",
            self.name,
            "broker trouble" if isinstance(exc, AMQPError) else "waiting for the database",
            exc,
            backoff,
        )

    def _lost(self, exc: BaseException) -> None:
        log.warning(
            "%s: broker connection lost (%s); the message will be redelivered", self.name, exc
        )

    async def _abandon(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.nack(requeue=True)
        except (AMQPError, ChannelInvalidStateError, ConnectionError):
            pass  # the broker requeues it with the channel anyway

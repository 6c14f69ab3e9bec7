"""A queue consumer that never crashes and never loses a message.

Each delivery runs its handler in its own task (up to the prefetch). The handler acks or
parks the message itself once its work is safely done. Around it:

* a transient failure (the database restarting, say) is waited out: the handler is retried
  with backoff while the message stays unacked, so nothing is acked before its commit;
* any other exception is a bug or bad data we did not foresee: the message is parked in the
  dead queue with the error as its reason, and consuming goes on;
* an error of the broker (a publish not confirmed in time) is retried the same way;
* a lost broker connection abandons the message; the broker redelivers it.

With a batch handler, the messages that arrive while a batch is being handled are handled
together as the next batch (at most `max_batch`, at most `batches` at once): under load the
ledger then pays its transaction once for many messages, and at low load a message waits for
nobody. A batch that fails with an unexpected error is handled again one message at a time,
so that only the message at fault is parked. A batch handler may also hand messages back to
be handled one at a time (a request that has to wait for its time, say).
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

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
# A batch handler returns the messages it leaves to the handler of single messages.
BatchHandler = Callable[[list[AbstractIncomingMessage]], Awaitable[list[AbstractIncomingMessage]]]


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
        batch: BatchHandler | None = None,
        max_batch: int = 100,
        batches: int = 1,
    ) -> None:
        self.name = name
        self._handler = handler
        self._batch = batch
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
        if self._batch is not None:
            self._pending.append(message)
            if len(self._drainers) < self._batches:
                drainer = asyncio.create_task(self._drain(self._batch))
                self._drainers.add(drainer)
                self._in_flight.add(drainer)
            return
        # aio-pika runs every delivery in a task of its own; tracking it lets stop() drain.
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._handle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _drain(self, handler: BatchHandler) -> None:
        """Handle what is pending, batch after batch, until nothing is."""
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._handle_batch(handler, batch)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._drainers.discard(task)
                self._in_flight.discard(task)

    def _hand_back(self, messages: list[AbstractIncomingMessage]) -> None:
        for message in messages:
            task = asyncio.create_task(self._handle(message, count=False))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _handle_batch(
        self, handler: BatchHandler, batch: list[AbstractIncomingMessage]
    ) -> None:
        REDELIVERIES.labels(self.name).inc(sum(1 for m in batch if m.redelivered))
        backoff = 0.05
        while True:
            # A retried batch leaves out what its failed try already acked or parked.
            batch = [m for m in batch if not m.processed]
            if not batch:
                return
            try:
                self._hand_back(await handler(batch))
                return
            except (ChannelInvalidStateError, AMQPConnectionError) as exc:
                self._lost(exc)
                # A batch can mix deliveries of a channel that died with those of its
                # successor; the latter would otherwise stay unacked on a live channel.
                self._hand_back([m for m in batch if not m.processed and _alive(m)])
                return
            except Exception as exc:
                if isinstance(exc, ConnectionError) and not self._transient(exc):
                    self._lost(exc)
                    self._hand_back([m for m in batch if not m.processed and _alive(m)])
                    return
                if not (self._transient(exc) or isinstance(exc, AMQPError)):
                    log.exception(
                        "%s: unexpected error in a batch of %d; handling them one by one",
                        self.name,
                        len(batch),
                    )
                    for message in batch:
                        if not message.processed:
                            await self._handle(message, count=False)
                    return
                if self._stopping:
                    for message in batch:
                        if not message.processed:
                            await self._abandon(message)
                    return
                self._retrying(exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _handle(self, message: AbstractIncomingMessage, *, count: bool = True) -> None:
        if count and message.redelivered:
            REDELIVERIES.labels(self.name).inc()
        backoff = 0.05
        while True:
            try:
                await self._handler(message)
                return
            except (ChannelInvalidStateError, AMQPConnectionError) as exc:
                self._lost(exc)
                return
            except Exception as exc:
                # A refused or reset socket is the database's when the handler says it is
                # worth waiting out; left alone, the message would stay unacked on a live
                # channel for ever and, prefetch by prefetch, stop the consumer.
                if isinstance(exc, ConnectionError) and not self._transient(exc):
                    self._lost(exc)
                    return
                if not (self._transient(exc) or isinstance(exc, AMQPError)):
                    log.exception("%s: unexpected error; parking the message", self.name)
                    await self._publisher.park(message, f"internal error: {exc!r}"[:500])
                    return
                if self._stopping:
                    await self._abandon(message)
                    return
                self._retrying(exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

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

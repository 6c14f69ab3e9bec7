"""A queue consumer that never crashes and never loses a message.

Each delivery runs its handler in its own task (up to the prefetch). The handler acks or
parks the message itself once its work is safely done. Around it:

* a transient failure (the database restarting, say) is waited out: the handler is retried
  with backoff while the message stays unacked, so nothing is acked before its commit;
* any other exception is a bug or bad data we did not foresee: the message is parked in the
  dead queue with the error as its reason, and consuming goes on;
* an error of the broker (a publish not confirmed in time) is retried the same way;
* a lost broker connection abandons the message; the broker redelivers it.
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


def _never(_: BaseException) -> bool:
    return False


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
    ) -> None:
        self.name = name
        self._handler = handler
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
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=timeout)

    @property
    def busy(self) -> int:
        return len(self._in_flight)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs every delivery in a task of its own; tracking it lets stop() drain.
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._handle(message)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        if message.redelivered:
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
                log.warning(
                    "%s: %s (%s); retrying in %.2f s",
                    self.name,
                    "broker trouble" if isinstance(exc, AMQPError) else "waiting for the database",
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)

    def _lost(self, exc: BaseException) -> None:
        log.warning(
            "%s: broker connection lost (%s); the message will be redelivered", self.name, exc
        )

    async def _abandon(self, message: AbstractIncomingMessage) -> None:
        try:
            await message.nack(requeue=True)
        except (AMQPError, ChannelInvalidStateError, ConnectionError):
            pass  # the broker requeues it with the channel anyway

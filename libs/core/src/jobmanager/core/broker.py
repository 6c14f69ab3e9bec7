"""RabbitMQ plumbing shared by the services: connecting, confirmed publishing, parking.

Every publish waits for the broker's confirm: a consumer acks its input only after what it
produced is safely in the broker, which is what makes the pipeline at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Literal

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aio_pika.connection import make_url
from aio_pika.exceptions import AMQPError
from aiormq.exceptions import (
    AMQPConnectionError,
    AuthenticationError,
    ConnectionClosed,
    InvalidFrameError,
    ProbableAuthenticationError,
)
from pydantic import BaseModel

from jobmanager.core import delays
from jobmanager.core.config import redact_url
from jobmanager.core.messages import ControlMessage, JobRequest
from jobmanager.core.runtime import Unavailable
from jobmanager.core.topology import ERROR_HEADER, Topology

log = logging.getLogger(__name__)

START_HINT = "start it with `docker compose up -d rabbitmq` or `rabbitmq-server -detached`"


ACCESS_HINT = (
    "check the user, password and vhost in JOBMANAGER_AMQP_URL, or create them with "
    "`rabbitmqctl add_user`, `add_vhost` and `set_permissions`"
)


def _refusal(exc: BaseException) -> str | None:
    """What a broker that answered refused (credentials, vhost), or None if it did not
    answer at all: the two need different fixes."""
    if isinstance(exc, ProbableAuthenticationError | AuthenticationError):
        return f"the credentials ({exc})"
    if isinstance(exc, ConnectionClosed) and exc.args[:1] in ((403,), (530,)):
        return f"access ({exc})"
    # A vhost that does not exist, or that the user may not use: the broker closes the
    # connection where aiormq expects Connection.OpenOk.
    if isinstance(exc, InvalidFrameError) and "Connection.Close" in str(exc):
        return "access to the vhost (it does not exist, or the user may not use it)"
    return None


class BrokerUnavailable(Unavailable):
    """RabbitMQ did not answer; the message says where we looked and how to start it."""


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def connect(url: str, *, name: str, timeout: float = 10.0) -> AbstractRobustConnection:
    """A robust (self-reconnecting) connection, or BrokerUnavailable with one clear line.

    The driver's own error log of a failed first attempt is silenced: BrokerUnavailable says
    it all. Later reconnects of the robust connection are logged as usual.
    """
    # What aio_pika.connect_robust does, except that a connection that fails to open is
    # closed here: dropped unclosed, it would be closed by the garbage collector, from
    # whatever thread and event loop happen to run it.
    connection = aio_pika.RobustConnection(
        make_url(url), client_properties={"connection_name": name}
    )
    try:
        with _quiet("aiormq.connection"):
            await connection.connect(timeout=timeout)
    except BaseException as exc:
        with suppress(Exception):
            await asyncio.wait_for(connection.close(), 5)
        refusal = _refusal(exc)
        if refusal is not None:
            raise BrokerUnavailable(
                f"RabbitMQ at {redact_url(url)} answers but refused {refusal}; {ACCESS_HINT}"
            ) from exc
        if isinstance(exc, OSError | AMQPConnectionError | TimeoutError):
            raise BrokerUnavailable(
                f"RabbitMQ is not answering at {redact_url(url)} ({exc or type(exc).__name__}); "
                f"{START_HINT}"
            ) from exc
        raise
    return connection


class Publisher:
    """Publishes persistent JSON messages on one confirming channel.

    Many publishes may be in flight at once on the channel; each call returns when the broker
    has confirmed its message, and raises if the message could not be routed.
    """

    def __init__(
        self, channel: AbstractChannel, topology: Topology, *, retry_s: float = 30.0
    ) -> None:
        self.channel = channel
        self.topology = topology
        self.retry_s = retry_s
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, topology: Topology, *, retry_s: float = 30.0
    ) -> Publisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel, topology, retry_s=retry_s)

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == "":
            return self.channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self.channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

    async def publish_raw(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        timestamp: datetime | None = None,
        mandatory: bool = True,
    ) -> None:
        """Publish and wait for the confirm. A failure (connection lost and being restored,
        a nack) is retried with backoff for up to `retry_s` before it is raised."""
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=dict(headers) if headers else None,
            message_id=message_id,
            timestamp=timestamp,
        )
        deadline = asyncio.get_running_loop().time() + self.retry_s
        backoff = 0.05
        while True:
            try:
                target = await self._exchange(exchange)
                await target.publish(message, routing_key, mandatory=mandatory)
                return
            except (AMQPError, ConnectionError, RuntimeError) as exc:
                if asyncio.get_running_loop().time() + backoff > deadline:
                    raise
                log.warning("publish to %r failed (%s); retrying", exchange or routing_key, exc)
                self._exchanges.pop(exchange, None)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        model: BaseModel,
        *,
        message_id: str | None = None,
        mandatory: bool = True,
    ) -> None:
        await self.publish_raw(
            exchange,
            routing_key,
            model.model_dump_json().encode(),
            message_id=message_id,
            mandatory=mandatory,
        )

    async def schedule(self, request: JobRequest, now: datetime) -> None:
        """Send a job request to the gate, through the delay stage if it is not due yet."""
        key = delays.routing_key((request.not_before - now).total_seconds() * 1000)
        if key is None:
            await self.publish("", self.topology.due_queue, request)
        else:
            await self.publish(self.topology.delay_entry, key, request)

    async def broadcast_change(self, kind: Literal["jobs", "settings"]) -> None:
        """Tell every running matcher to reload its catalogue (jobs or settings changed)."""
        await self.publish(
            self.topology.control_exchange,
            "",
            ControlMessage(kind=kind, at=datetime.now(UTC)),
            mandatory=False,
        )

    async def park(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Move a message we cannot handle to the dead queue with its reason, then ack it.

        If even that publish fails, the message is rejected: the queue's dead-letter
        settings still move it to the dead queue (with the broker's x-death, not our reason).
        """
        headers: dict[str, Any] = dict(message.headers or {})
        headers[ERROR_HEADER] = reason[:1000]
        headers["x-jobmanager-queue"] = message.routing_key or ""
        headers["x-jobmanager-exchange"] = message.exchange or ""
        log.warning("parked a message from %r: %s", message.exchange, reason)
        try:
            await self.publish_raw(
                "",
                self.topology.dead_queue,
                message.body,
                headers=headers,
                message_id=message.message_id,
            )
        except Exception:
            log.exception("could not park a message; rejecting it to the dead-letter queue")
            await message.reject(requeue=False)
        else:
            await message.ack()

"""AMQP namespaces of their own on the shared broker, and looking at its queues.

All our exchanges and queues carry the namespace (`Topology`), so a test or a measurement in
a namespace of its own neither sees nor disturbs anyone else's. Declaring and deleting go
through a connection of their own, tried again for a while: other people's fault tests
restart the broker, and cleanup must still succeed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPConnectionError, ChannelNotFoundEntity

from jobmanager.core.topology import Topology


def unique(prefix: str, sep: str = "-") -> str:
    """A name no one else uses: a namespace, a queue, a database (with `sep="_"`)."""
    return f"{prefix}{sep}{uuid.uuid4().hex[:12]}"


def topology_of(namespace: str) -> Topology:
    """Our topology in `namespace`, with an events exchange of the namespace's own (in
    production the Channel Manager's exchange is shared)."""
    return Topology(namespace, events_exchange=f"{namespace}.cm-events")


async def on_fresh_connection(
    amqp_url: str, work: Callable[[AbstractChannel], Awaitable[None]], *, attempts: int = 10
) -> None:
    """Run `work` on a channel of a connection of its own, connecting again for a while if
    the broker does not answer."""
    for attempt in range(attempts):
        try:
            connection = await aio_pika.connect(amqp_url)
        except (OSError, AMQPConnectionError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(2)
            continue
        try:
            await work(await connection.channel())
            return
        finally:
            await connection.close()


@contextlib.asynccontextmanager
async def namespace(amqp_url: str, name: str | None = None) -> AsyncIterator[Topology]:
    """Our topology declared in the namespace `name` (default: a new one), deleted with its
    events exchange afterwards."""
    topology = topology_of(name or unique("jmtest"))

    async def delete(channel: AbstractChannel) -> None:
        await topology.delete(channel)
        await channel.exchange_delete(topology.events_exchange)

    try:
        await on_fresh_connection(amqp_url, topology.declare)
        yield topology
    finally:
        await on_fresh_connection(amqp_url, delete)


async def delete_queues(amqp_url: str, *queues: str, exchanges: Sequence[str] = ()) -> None:
    """Delete queues and exchanges (that need not exist) on a connection of their own."""

    async def delete(channel: AbstractChannel) -> None:
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)

    await on_fresh_connection(amqp_url, delete)


async def queue_counts(connection: AbstractConnection, queue: str) -> tuple[int, int]:
    """(consumers, ready messages) of a queue; (0, 0) if it does not exist (yet).

    A channel of its own each time: a robust channel answers a repeated passive declare from
    its cache, and a declare of a missing queue closes the channel it was made on.
    """
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except ChannelNotFoundEntity:
        return 0, 0
    result = declared.declaration_result
    with contextlib.suppress(Exception):
        await channel.close()
    return int(result.consumer_count or 0), int(result.message_count or 0)


def broken(connection: AbstractConnection) -> bool:
    """Whether the connection is gone. A plain aio-pika connection the broker closed (a
    restart) does not always say so itself; its transport (aiormq's connection) does."""
    if connection.is_closed:
        return True
    transport = getattr(connection, "transport", None)
    return transport is None or bool(transport.connection.is_closed)

"""Sending Channel Manager events: one (`publish`) or a realistic stream (`simulate`)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aio_pika

from jobmanager.core.broker import Publisher, connect
from jobmanager.core.config import ServiceSettings
from jobmanager.core.messages import Event
from jobmanager.core.topology import Topology

ORIGINS = ("avcm", "avcm", "avcm", "manual")
PODS = tuple(f"pod-{n}" for n in range(1, 9))
ENCODERS = tuple(f"enc-{n:02d}" for n in range(1, 17))
NAMES = (
    "ESPN",
    "CNN",
    "HBO",
    "NBC",
    "FOX",
    "AMC",
    "TNT",
    "USA",
    "BBC",
    "CBS",
    "ABC",
    "TBS",
    "DISC",
    "HIST",
    "NATGEO",
    "MTV",
    "CMT",
    "BRAVO",
    "SYFY",
    "FX",
)


class ChannelManagerSimulator:
    """A repeatable stream of plausible Channel Manager notifications.

    Mostly `channel.updated` with a pod or encoder change; some additions, removals and
    validation failures; about one update in ten carries a channel that is not valid, so an
    `ipx_update` job fails with Feedback now and then.
    """

    def __init__(self, *, channels: int = 12, seed: int | None = None) -> None:
        self._random = random.Random(seed)  # noqa: S311 - simulation, not security
        self._channels = {
            f"{NAMES[i % len(NAMES)]}-{'HD' if i < len(NAMES) else i}": self._channel(i)
            for i in range(channels)
        }

    def _channel(self, i: int) -> dict[str, Any]:
        r = self._random
        return {
            "name": f"{NAMES[i % len(NAMES)]} HD",
            "origin": r.choice(ORIGINS),
            "pod_service": r.choice(PODS),
            "compression_element": r.choice(ENCODERS),
            "valid": True,
        }

    def events(self) -> Iterator[Event]:
        r = self._random
        while True:
            channel_id = r.choice(list(self._channels))
            channel = self._channels[channel_id]
            roll = r.random()
            changes: dict[str, Any] = {}
            if roll < 0.75:
                event_type = "channel.updated"
                field, pool = r.choice((("pod_service", PODS), ("compression_element", ENCODERS)))
                new = r.choice(pool)
                changes[field] = {"old": channel[field], "new": new}
                channel[field] = new
                channel["valid"] = r.random() > 0.1
            elif roll < 0.85:
                event_type = "channel.validation_failed"
                channel["valid"] = False
            elif roll < 0.93:
                event_type = "channel.added"
                channel["valid"] = True
            else:
                event_type = r.choice(("channel.removed", "service.created", "service.removed"))
            yield Event(
                event_id=str(uuid.UUID(int=r.getrandbits(128))),
                event_type=event_type,
                source="channel-manager",
                occurred_at=datetime.now(UTC),
                data={"channel": {"channel_id": channel_id, **channel}, "changes": changes},
            )


async def _open(
    settings: ServiceSettings,
) -> tuple[aio_pika.abc.AbstractRobustConnection, Publisher]:
    connection = await connect(settings.amqp_url, name="jobmanager-cli")
    topology = Topology.from_settings(settings)
    channel = await connection.channel()
    # The Channel Manager's exchange; declared idempotently as the matcher does.
    await channel.declare_exchange(
        topology.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )
    return connection, await Publisher.open(connection, topology)


async def send(publisher: Publisher, event: Event) -> None:
    await publisher.publish(
        publisher.topology.events_exchange,
        event.event_type,
        event,
        message_id=event.event_id,
        mandatory=False,
    )


async def publish_one(
    event_type: str, data: dict[str, Any], *, event_id: str | None, source: str
) -> str:
    """Publish one event; returns its id."""
    event = Event(
        event_id=event_id or str(uuid.uuid4()),
        event_type=event_type,
        source=source,
        occurred_at=datetime.now(UTC),
        data=data,
    )
    connection, publisher = await _open(ServiceSettings())
    try:
        await send(publisher, event)
    finally:
        await connection.close()
    return event.event_id


async def simulate(
    *,
    rate: float,
    count: int | None,
    channels: int,
    seed: int | None,
    stop: asyncio.Event | None = None,
) -> int:
    """Publish simulated events at `rate` per second until `count` or `stop`."""
    connection, publisher = await _open(ServiceSettings())
    sent = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for event in ChannelManagerSimulator(channels=channels, seed=seed).events():
            if (count is not None and sent >= count) or (stop is not None and stop.is_set()):
                break
            # Pace against the start time, so that slow publishes do not lower the rate.
            await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
            await send(publisher, event)
            sent += 1
    finally:
        await connection.close()
    return sent

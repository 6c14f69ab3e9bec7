"""Traffic: Channel Manager events and confirmed publishing with many messages in flight."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange

EVENT_TYPE = "bench.channel.updated"


def event(lane: str, *, occurred_at: datetime | None = None, **extra: Any) -> dict[str, Any]:
    """An event shaped like the Channel Manager's, routed to `lane` by the bench job."""
    return {
        "event_id": uuid.uuid4().hex,
        "event_type": EVENT_TYPE,
        "source": "channel-manager",
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "data": {
            "lane": lane,
            "channel": {
                "channel_id": lane,
                "name": f"Channel {lane}",
                "origin": "avcm",
                "pod_service": "pod-7",
                "compression_element": "enc-12",
                "valid": True,
            },
            "changes": {"pod_service": {"old": "pod-3", "new": "pod-7"}},
            **extra,
        },
    }


def message(body: bytes, message_id: str | None = None) -> aio_pika.Message:
    """As our services and the Channel Manager publish: persistent JSON."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
    )


@dataclass
class ConfirmedPublisher:
    """Publishes on a confirming channel; `many` keeps up to `window` unconfirmed."""

    exchange: AbstractExchange

    @classmethod
    async def open(cls, channel: AbstractChannel, exchange: str) -> ConfirmedPublisher:
        target = (
            channel.default_exchange
            if exchange == ""
            else await channel.get_exchange(exchange, ensure=False)
        )
        return cls(target)

    async def one(self, routing_key: str, body: bytes, message_id: str | None = None) -> None:
        await self.exchange.publish(message(body, message_id), routing_key=routing_key)

    async def many(self, routing_key: str, bodies: Sequence[bytes], *, window: int = 1000) -> float:
        """Publish all bodies, at most `window` unconfirmed at once; the seconds it took."""
        start = time.perf_counter()
        slots = asyncio.Semaphore(window)

        async def send(body: bytes) -> None:
            try:
                await self.one(routing_key, body)
            finally:
                slots.release()

        tasks = []
        for body in bodies:
            await slots.acquire()
            tasks.append(asyncio.create_task(send(body)))
        await asyncio.gather(*tasks)
        return time.perf_counter() - start


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()

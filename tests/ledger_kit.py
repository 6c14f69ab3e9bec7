"""What the ledger's tests share: a fixed clock, a transaction, events and planned runs."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jobmanager.core.messages import Event
from jobmanager.jobs.spec import PlannedRun

T = TypeVar("T")
T0 = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def tx(engine: AsyncEngine, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async with engine.begin() as conn:
        return await fn(conn)


def event(event_id: str | None = None) -> Event:
    return Event(
        event_id=event_id or uuid.uuid4().hex,
        event_type="channel.updated",
        data={"channel": {"channel_id": "ESPN-HD"}},
    )


def plan(lane: str | None = "L", **kw: Any) -> PlannedRun:
    fields: dict[str, Any] = {
        "job_id": None,
        "job_name": "job",
        "script": "noop",
        "command": "cmd",
        "lane": lane,
    }
    fields.update(kw)
    return PlannedRun(**fields)

"""What the admin app holds while it runs: the database, the broker connection, settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from aio_pika.abc import AbstractRobustConnection
from fastapi import Depends, HTTPException, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jobmanager.admin.config import AdminSettings
from jobmanager.core.broker import Publisher, connect
from jobmanager.core.runtime import Unavailable
from jobmanager.core.topology import Topology
from jobmanager.store import db

log = logging.getLogger(__name__)


class Database:
    """The engine, with a short connect timeout so that a database that is down gives a
    quick 503 rather than a hanging request."""

    def __init__(self, url: str, *, pool_size: int) -> None:
        self.engine: AsyncEngine = db.create_engine(
            url, pool_size=pool_size, connect_timeout=3, command_timeout=5
        )

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn


@dataclass
class Broker:
    """The broker connection, made in the background: the API serves reads while the broker
    is away, and answers 503 to actions that need it."""

    url: str
    topology: Topology
    connection: AbstractRobustConnection | None = None
    publisher: Publisher | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                # Held at once, so that close() closes it even if the app stops (cancelling
                # this task) while the topology is being declared: a connection dropped
                # unclosed is closed by the garbage collector, outside any event loop.
                self.connection = await connect(self.url, name="jobmanager-admin")
                await self.topology.declare(await self.connection.channel())
                # An operator waits for the answer: a short retry, then 503 rather than 30 s.
                self.publisher = await Publisher.open(self.connection, self.topology, retry_s=3)
                log.info("connected to the broker")
                return
            except Unavailable as exc:
                log.warning("%s; retrying in %.1f s", exc, delay)
                if self.connection is not None:
                    with contextlib.suppress(Exception):
                        await self.connection.close()
                    self.connection = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    @property
    def ready(self) -> bool:
        # A robust connection that is reconnecting is not closed, yet not connected either.
        return (
            self.connection is not None
            and self.publisher is not None
            and not self.connection.is_closed
            and self.connection.connected.is_set()
        )

    async def dead_letters(self) -> int | None:
        """Messages parked in the dead queue, or None if the broker cannot say now."""
        if not self.ready or self.connection is None:
            return None
        try:
            channel = await self.connection.channel()
            try:
                queue = await channel.declare_queue(self.topology.dead_queue, passive=True)
                return int(queue.declaration_result.message_count or 0)
            finally:
                await channel.close()
        except Exception:
            log.warning("could not count the dead letters", exc_info=True)
            return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.connection is not None:
            await self.connection.close()


def _state(request: Request) -> Any:
    return request.app.state


def get_db(request: Request) -> Database:
    return _state(request).db  # type: ignore[no-any-return]


def get_settings(request: Request) -> AdminSettings:
    return _state(request).settings  # type: ignore[no-any-return]


def get_publisher(request: Request) -> Publisher:
    """The publisher, or 503 when the broker is not connected (checked before acting)."""
    broker: Broker = _state(request).broker
    if broker.publisher is None or not broker.ready:
        raise HTTPException(
            503,
            "the broker is unavailable; nothing was changed, try again",
            headers={"Retry-After": "5"},
        )
    return broker.publisher


DB = Annotated[Database, Depends(get_db)]
Settings = Annotated[AdminSettings, Depends(get_settings)]
Pub = Annotated[Publisher, Depends(get_publisher)]

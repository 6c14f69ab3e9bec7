"""The `admin` fixture: the admin app in-process (its lifespan running) against the real
Postgres (a cloned database per test) and RabbitMQ (the test's own namespace), with a client
that sends the bootstrap (admin) token. Helpers live in `admin_kit`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from admin_kit import Admin, admin_settings, running
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.topology import Topology


@pytest.fixture
async def admin(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> AsyncIterator[Admin]:
    async with running(admin_settings(amqp_url, database_url, topology), engine) as admin:
        for _ in range(100):  # the broker connects in the background
            if admin.app.state.broker.ready:
                break
            await asyncio.sleep(0.05)
        yield admin

"""The `admin` fixture: the admin app in-process (its lifespan running) against the real
Postgres (a cloned database per test) and RabbitMQ (the test's own namespace), with a client
that sends the bootstrap (admin) token. Helpers live in `admin_kit`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from admin_kit import TOKEN, Admin, admin_settings
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.admin.app import create_app
from jobmanager.core.topology import Topology


@pytest.fixture
async def admin(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> AsyncIterator[Admin]:
    settings = admin_settings(amqp_url, database_url, topology)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        for _ in range(100):  # the broker connects in the background
            if app.state.broker.ready:
                break
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://admin",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as client:
            yield Admin(app, client, engine, settings)

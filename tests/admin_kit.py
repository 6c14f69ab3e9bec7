"""The admin app under test: a client bound to it, and ways to make data (runs in every
state, keys, executor reports).

The app talks to the real Postgres (a cloned database per test) and the real RabbitMQ (the
test's own namespace); requests go through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.admin.app import create_app
from jobmanager.admin.auth import create_key
from jobmanager.admin.config import AdminSettings
from jobmanager.core.messages import Event, JobRequest, JobResult
from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import PlannedRun
from jobmanager.store import ledger
from jobmanager.store.db import create_engine
from jobmanager.store.models import Executor
from jobmanager.testkit import databases, namespaces

TOKEN = "bootstrap-token-for-tests-0123456789"
SCRIPTS = ["ipx_update", "noop", "channel_report"]


@dataclass
class Admin:
    """A running admin app with a client that sends the bootstrap (admin) token."""

    app: FastAPI
    client: httpx.AsyncClient
    engine: AsyncEngine
    settings: AdminSettings

    async def key(self, role: str) -> str:
        async with self.engine.begin() as conn:
            _, key = await create_key(conn, name=f"{role}-{uuid.uuid4().hex[:6]}", role=role)
        return key

    def as_(self, key: str | None) -> dict[str, str]:
        """Headers for a request as another key (None: no key at all)."""
        return {"Authorization": f"Bearer {key}"} if key else {"Authorization": ""}

    async def report_executor(self, scripts: list[str] | None = None) -> None:
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(Executor).values(
                    id=f"exec-{uuid.uuid4().hex[:6]}",
                    scripts=scripts or SCRIPTS,
                    concurrency=4,
                    busy=0,
                    started_at=now,
                    last_seen_at=now,
                )
            )

    async def runs(
        self, *lanes: str | None, interval_s: float = 0.0, job: str = "job"
    ) -> list[JobRequest]:
        """Runs (one per lane given) as the matcher creates them; returns their requests."""
        event = Event(
            event_id=uuid.uuid4().hex,
            event_type="channel.updated",
            data={"channel": {"channel_id": "ESPN-HD"}},
        )
        planned = [
            PlannedRun(job_id=None, job_name=job, script="noop", command=f"command {i}", lane=lane)
            for i, lane in enumerate(lanes)
        ]
        async with self.engine.begin() as conn:
            done = await ledger.enqueue(
                conn, [(event, planned)], interval_s=interval_s, now=datetime.now(UTC)
            )
        assert done.recorded == [True]
        return done.outbox.requests

    async def dispatch(self, request: JobRequest) -> JobRequest:
        async with self.engine.begin() as conn:
            [decision], _ = await ledger.gate(
                conn, [request], now=datetime.now(UTC), interval_s=0.0
            )
        assert isinstance(decision, ledger.Dispatch), decision
        return decision.request

    async def finish(
        self, request: JobRequest, result: int, feedback: str = ""
    ) -> list[JobRequest]:
        now = datetime.now(UTC)
        outcome = JobResult(
            run_id=request.run_id,
            attempt=request.attempt,
            result=result,  # type: ignore[arg-type]
            status="succeeded" if result == 3 else "failed",
            feedback=feedback,
            started_at=now,
            finished_at=now,
            executor="exec-test",
        )
        async with self.engine.begin() as conn:
            done = await ledger.record(conn, [], [outcome], interval_s=0.0, now=now)
        return done.outbox.requests

    async def run_to_end(
        self, result: int, feedback: str = "", lane: str | None = None, job: str = "job"
    ) -> int:
        """A run that ended Succeeded (3) or Failed (2); returns its id."""
        [request] = await self.runs(lane, job=job)
        sent = await self.dispatch(request)
        await self.finish(sent, result, feedback)
        return sent.run_id


def admin_settings(
    amqp_url: str, database_url: str, topology: Topology, **extra: Any
) -> AdminSettings:
    return AdminSettings(
        amqp_url=amqp_url,
        database_url=database_url,
        namespace=topology.namespace,
        events_exchange=topology.events_exchange,
        admin_token=TOKEN,
        cleanup_interval_s=extra.pop("cleanup_interval_s", 3600.0),
        **extra,
    )


@contextlib.asynccontextmanager
async def own_world(
    amqp_url: str, postgres_url: str, template_database: str, label: str
) -> AsyncIterator[tuple[AdminSettings, AsyncEngine]]:
    """Settings and an engine for an admin app with a database and a namespace of its own,
    for module-scoped fixtures (conftest's per-test world costs about a second each); both
    are removed afterwards."""
    async with (
        databases.clone(postgres_url, template_database, prefix=f"jmtest_{label}") as url,
        namespaces.namespace(amqp_url) as topology,
    ):
        settings = admin_settings(amqp_url, url, topology)
        engine = create_engine(settings.database_url, pool_size=2)
        try:
            yield settings, engine
        finally:
            await engine.dispose()


@contextlib.asynccontextmanager
async def running(settings: AdminSettings, engine: AsyncEngine) -> AsyncIterator[Admin]:
    """The app with its lifespan running, and a client sending the bootstrap token. Starting
    must not wait for the broker (it connects in the background) nor hang on anything."""
    app = create_app(settings)
    async with contextlib.AsyncExitStack() as stack:
        async with asyncio.timeout(10):
            await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://admin", headers=headers)
        )
        yield Admin(app, client, engine, settings)

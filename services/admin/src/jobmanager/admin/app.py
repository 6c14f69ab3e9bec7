"""The admin application: `create_app(settings)` wires state, routes and background tasks.

Background tasks: connecting to the broker (the API serves reads without it), refreshing the
metrics' table counts, and the periodic Auto Cleanup.

Around the routes, outermost first: the access log, the metrics, the request limits (path
digits, body size). What a client may send and how each limit is proven: docs/SECURITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

from fastapi import FastAPI

from jobmanager.admin import apidocs, console, problems
from jobmanager.admin.access import AccessLog
from jobmanager.admin.config import AdminSettings
from jobmanager.admin.limits import RequestLimits
from jobmanager.admin.metrics import Metrics
from jobmanager.admin.routes import (
    activity,
    bulk,
    finished,
    health,
    jobs,
    keys,
    overview,
    pausing,
    queue,
    replay,
    settings,
    whoami,
)
from jobmanager.admin.state import Broker, Database
from jobmanager.core.topology import Topology
from jobmanager.jobs.renderer import RenderPool
from jobmanager.store import cleanup

log = logging.getLogger(__name__)


async def _every(seconds: float, work: Callable[[], Awaitable[None]], name: str) -> None:
    while True:
        try:
            await work()
        except Exception as exc:
            log.warning("%s failed (%s); trying again in %.0f s", name, exc, seconds)
        await asyncio.sleep(seconds)


def create_app(config: AdminSettings) -> FastAPI:
    db = Database(config.database_url, pool_size=config.db_pool_size)
    broker = Broker(config.amqp_url, Topology.from_settings(config))
    metrics = Metrics()
    # Started on first use: most admins render a template only now and then.
    renderer = RenderPool.from_settings(config)

    async def clean() -> None:
        async with db.begin() as conn:
            report = await cleanup.cleanup_pass(conn, now=datetime.now(UTC))
        if report and (report.executed or report.failed or report.events):
            log.info(
                "auto cleanup: %d executed, %d failed runs, %d events deleted",
                report.executed,
                report.failed,
                report.events,
            )

    async def count() -> None:
        metrics.update_counts(await overview.table_counts(db))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        broker.start()
        tasks = [
            asyncio.create_task(_every(config.cleanup_interval_s, clean, "auto cleanup")),
            asyncio.create_task(_every(config.metrics_refresh_s, count, "metrics refresh")),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await broker.close()
            await renderer.close()
            await db.engine.dispose()

    app = FastAPI(
        title="Job Manager",
        summary="The Jobs, Queue, Executed Jobs and Failed Jobs tables over HTTP.",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served by a route that declares its (public) role
    )
    app.state.settings = config
    app.state.db = db
    app.state.broker = broker
    app.state.metrics = metrics
    app.state.renderer = renderer
    app.state.metrics_refresh = count
    problems.install(app)
    problems.document(app)
    # add_middleware wraps what was added before: the last one added runs first.
    app.add_middleware(RequestLimits, max_body_bytes=config.admin_max_body_bytes)
    metrics.install(app)
    if config.admin_access_log:
        app.add_middleware(AccessLog)
    # Before health's router: its `/docs` (Swagger UI from a CDN) is replaced by this one.
    app.include_router(apidocs.router)
    app.include_router(health.router)
    for module in (
        jobs,
        pausing,
        queue,
        finished,
        bulk,
        replay,
        settings,
        overview,
        activity,
        keys,
        whoami,
    ):
        app.include_router(module.router)
    app.include_router(console.router)
    return app

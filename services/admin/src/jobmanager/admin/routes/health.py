"""Liveness, readiness, metrics and the API's own documentation (all public)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.problems import problem
from jobmanager.admin.state import DB

router = auth_router(tags=["health"])
Public = Annotated[Principal, requires("public")]


@router.get("/healthz")
async def healthz(_: Public) -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database or broker unreachable"}})
async def readyz(request: Request, db: DB, _: Public) -> Any:
    """The database and the broker are reachable."""
    problems = []
    try:
        async with asyncio.timeout(3):
            async with db.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except Exception as exc:
        problems.append(f"database: {exc.__class__.__name__}")
    if not request.app.state.broker.ready:
        problems.append("broker: not connected")
    if problems:
        return problem(503, "; ".join(problems))
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, _: Public) -> Response:
    """Prometheus metrics."""
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request, _: Public) -> JSONResponse:
    return JSONResponse(request.app.openapi())

"""The Queue page: waiting and running runs; Remove and Execute Now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.queries import RunFilters, list_runs
from jobmanager.admin.routes.common import (
    API,
    Cursor,
    Limit,
    RunId,
    deliver,
    queue_filters,
    run_or_404,
)
from jobmanager.admin.schemas import Page, RunDetail, RunOut
from jobmanager.admin.state import DB, Pub
from jobmanager.store import ledger, settings

router = auth_router(prefix=API, tags=["queue"])


@router.get("/queue", response_model=Page[RunOut])
async def queue(
    db: DB,
    _: Annotated[Principal, requires("viewer")],
    filters: Annotated[RunFilters, Depends(queue_filters)],
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[RunOut]:
    """Runs waiting, dispatched or running, newest first."""
    async with db.connect() as conn:
        return await list_runs(conn, "queue", filters, limit=limit, cursor=cursor)


@router.delete("/queue/{run_id:int}", response_model=RunDetail)
async def remove(
    run_id: RunId, db: DB, publisher: Pub, caller: Annotated[Principal, requires("operator")]
) -> RunDetail:
    """Remove a waiting run: it never executes and its lane moves on. A dispatched or
    running run cannot be removed (409)."""
    now = datetime.now(UTC)
    async with audited(db, caller, "queue.remove", f"run:{run_id}") as conn:
        interval = (await settings.load(conn, "queue", settings.QueueSettings)).interval_s
        outbox = await ledger.remove(conn, run_id, interval_s=interval, now=now)
    await deliver(publisher, outbox, now)
    return await run_or_404(db, run_id)


@router.post("/queue/{run_id:int}/execute-now", response_model=RunDetail)
async def execute_now(
    run_id: RunId, db: DB, publisher: Pub, caller: Annotated[Principal, requires("operator")]
) -> RunDetail:
    """Run a waiting run next, without waiting for the interval; runs of one lane still
    never overlap (it starts when the lane's running run has finished)."""
    now = datetime.now(UTC)
    async with audited(db, caller, "queue.execute_now", f"run:{run_id}") as conn:
        outbox = await ledger.execute_now(conn, run_id, now=now)
    await deliver(publisher, outbox, now)
    return await run_or_404(db, run_id)


@router.get("/runs/{run_id:int}", response_model=RunDetail)
async def run(run_id: RunId, db: DB, _: Annotated[Principal, requires("viewer")]) -> RunDetail:
    """A run with all its attempts, the event that caused it, and its output tail."""
    return await run_or_404(db, run_id)

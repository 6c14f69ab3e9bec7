"""Pausing and resuming a job (flow control): its runs wait, queued, until the resume."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import HTTPException

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.routes.common import API, SmallId, deliver
from jobmanager.admin.routes.jobs import job_out
from jobmanager.admin.schemas import JobOut
from jobmanager.admin.state import DB, Pub
from jobmanager.store import jobs as job_store
from jobmanager.store import settings
from jobmanager.store.ledger import JobNotFound

router = auth_router(prefix=API, tags=["jobs"])


async def _set(db: DB, publisher: Pub, caller: Principal, job_id: int, paused: bool) -> JobOut:
    now = datetime.now(UTC)
    action = "jobs.pause" if paused else "jobs.resume"
    try:
        async with audited(db, caller, action, f"job:{job_id}") as conn:
            interval = (await settings.load(conn, "queue", settings.QueueSettings)).interval_s
            outbox = await job_store.set_paused(
                conn, job_id, paused, actor=caller.name, interval_s=interval, now=now
            )
    except JobNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    await deliver(publisher, outbox, now)
    async with db.connect() as conn:
        row = await job_store.get(conn, job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id} does not exist")
    return job_out(row)


@router.post("/jobs/{job_id:int}/pause", response_model=JobOut)
async def pause(
    job_id: SmallId, db: DB, publisher: Pub, caller: Annotated[Principal, requires("operator")]
) -> JobOut:
    """Pause a job: its matching events still create runs, queued, and none is dispatched
    until it is resumed; runs already dispatched or running finish, and other jobs' runs in
    the same lanes pass its runs. Pausing a paused job changes nothing."""
    return await _set(db, publisher, caller, job_id, True)


@router.post("/jobs/{job_id:int}/resume", response_model=JobOut)
async def resume(
    job_id: SmallId, db: DB, publisher: Pub, caller: Annotated[Principal, requires("operator")]
) -> JobOut:
    """Resume a paused job: its waiting runs run in enqueue order with their lanes'
    interval, and the circuit breaker's count starts again."""
    return await _set(db, publisher, caller, job_id, False)

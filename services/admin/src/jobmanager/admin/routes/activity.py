"""The console's landing page in one call: what ended per minute, which jobs fail, the
backlog, the paused jobs, the executors and the dead letters.

Every figure is aggregated in Postgres over the window's rows only, read through the partial
indexes the Executed and Failed pages use (`ix_runs_executed`, `ix_runs_failed`), so the cost
follows the runs that ended in the window, not the size of the history.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, cast

from fastapi import Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import Table, func, literal, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.routes.common import API
from jobmanager.admin.state import DB, Settings
from jobmanager.store.models import Executor, Job, Lane, Run

router = auth_router(prefix=API, tags=["overview"])
runs = cast(Table, Run.__table__)
jobs = cast(Table, Job.__table__)
executors = cast(Table, Executor.__table__)
lanes = cast(Table, Lane.__table__)

Window = Literal["hour", "day"]
# The window and the width of one bar of the chart: 60 bars of a minute, 96 of 15 minutes.
WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "hour": (timedelta(hours=1), timedelta(minutes=1)),
    "day": (timedelta(days=1), timedelta(minutes=15)),
}
JOBS_SHOWN = 10
# One query per final state: each is a range scan of that state's partial index on
# finished_at (`state IN (...)` would read the whole table).
ENDED = ("succeeded", "failed")


class Bucket(BaseModel):
    at: datetime = Field(description="the start of the bucket")
    succeeded: int
    failed: int


class JobFailures(BaseModel):
    job: str
    succeeded: int
    failed: int
    failure_rate: float = Field(description="failed / (succeeded + failed) in the window")


class PausedJob(BaseModel):
    id: int
    name: str
    paused_at: datetime | None
    paused_reason: str | None


class ExecutorLoad(BaseModel):
    id: str
    concurrency: int
    busy: int
    last_seen_at: datetime


class ActivityOut(BaseModel):
    window: Window
    bucket_s: int
    buckets: list[Bucket] = Field(description="runs that ended, per bucket, oldest first")
    jobs: list[JobFailures] = Field(
        description=f"the {JOBS_SHOWN} jobs with the most failures in the window"
    )
    queued: int
    lanes_busy: int
    lanes_waiting: int
    paused: list[PausedJob]
    executors: list[ExecutorLoad]
    dead_letters: int | None = Field(description="null when the broker is not reachable")


async def _buckets(
    conn: AsyncConnection, now: datetime, window: timedelta, width: timedelta
) -> list[Bucket]:
    # Buckets aligned on the width (whole minutes, quarter hours), the current one last.
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    first = origin + ((now - window - origin) // width + 1) * width
    bucket = func.date_bin(literal(width), runs.c.finished_at, literal(origin)).label("at")
    per_state = [
        select(bucket, literal(state).label("state"), func.count())
        .where(runs.c.state == state, runs.c.finished_at >= first)
        .group_by(text("1"))
        for state in ENDED
    ]
    rows = (await conn.execute(union_all(*per_state))).all()
    counts = {(at, state): n for at, state, n in rows}
    starts = [first + k * width for k in range(round(window / width))]
    return [
        Bucket(
            at=at, succeeded=counts.get((at, "succeeded"), 0), failed=counts.get((at, "failed"), 0)
        )
        for at in starts
    ]


async def _backlog(conn: AsyncConnection) -> tuple[int, int, int]:
    """Runs queued, lanes whose head is active, lanes whose head waits: read through the
    Queue's partial index and the lanes, never a count over the whole history."""
    queued = await conn.scalar(
        select(func.count()).select_from(runs).where(runs.c.state == "queued")
    )
    heads: dict[str, int] = dict(
        (
            await conn.execute(
                select(runs.c.state, func.count())
                .select_from(lanes.join(runs, runs.c.id == lanes.c.head_run_id))
                .group_by(runs.c.state)
            )
        ).all()
    )
    busy = heads.get("dispatched", 0) + heads.get("running", 0)
    return int(queued or 0), busy, heads.get("queued", 0)


async def _failing_jobs(conn: AsyncConnection, since: datetime) -> list[JobFailures]:
    ended = union_all(
        *(
            select(runs.c.job_name, runs.c.state).where(
                runs.c.state == state, runs.c.finished_at >= since
            )
            for state in ENDED
        )
    ).subquery()
    failed = func.count().filter(ended.c.state == "failed")
    succeeded = func.count().filter(ended.c.state == "succeeded")
    rows = (
        await conn.execute(
            select(ended.c.job_name, succeeded.label("succeeded"), failed.label("failed"))
            .group_by(ended.c.job_name)
            .having(failed > 0)
            .order_by(failed.desc(), ended.c.job_name)
            .limit(JOBS_SHOWN)
        )
    ).all()
    return [
        JobFailures(
            job=r.job_name,
            succeeded=r.succeeded,
            failed=r.failed,
            failure_rate=r.failed / (r.failed + r.succeeded),
        )
        for r in rows
    ]


@router.get("/activity", response_model=ActivityOut)
async def activity(
    request: Request,
    db: DB,
    settings: Settings,
    _: Annotated[Principal, requires("viewer")],
    window: Annotated[Window, Query(description="the last hour (by minute) or day")] = "hour",
) -> ActivityOut:
    """What the console's Overview shows: runs that ended per minute (or quarter hour) by
    outcome, the jobs that failed most, the backlog, paused jobs, executors, dead letters."""
    now = datetime.now(UTC)
    span, width = WINDOWS[window]
    seen_since = now - timedelta(seconds=settings.executor_report_window_s)
    async with db.connect() as conn:
        queued, busy, waiting = await _backlog(conn)
        buckets = await _buckets(conn, now, span, width)
        failing = await _failing_jobs(conn, buckets[0].at)
        paused = (
            await conn.execute(
                select(jobs.c.id, jobs.c.name, jobs.c.paused_at, jobs.c.paused_reason)
                .where(jobs.c.paused)
                .order_by(jobs.c.name)
            )
        ).all()
        loads = (
            await conn.execute(
                select(executors)
                .where(executors.c.last_seen_at >= seen_since)
                .order_by(executors.c.id)
            )
        ).all()
    return ActivityOut(
        window=window,
        bucket_s=int(width.total_seconds()),
        buckets=buckets,
        jobs=failing,
        queued=queued,
        lanes_busy=busy,
        lanes_waiting=waiting,
        paused=[PausedJob.model_validate(r, from_attributes=True) for r in paused],
        executors=[ExecutorLoad.model_validate(r, from_attributes=True) for r in loads],
        dead_letters=await request.app.state.broker.dead_letters(),
    )

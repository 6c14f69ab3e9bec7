"""Replay past events into a job: the recorded events of a window, matched against the job
as it is now, each match without a run of this job getting one.

An event makes one run of a job, ever (the ledger's unique (event, job) key): replaying a
window twice creates nothing new, and neither does replaying events the job already ran
for. The events are read oldest first, at most `MAX_SCAN` per call; an answer with `more`
says where to go on (`next_since`: a window that starts there again is harmless, for the
same reason). Templates are rendered by the admin's render pool before the transaction,
within the same limits as the matcher's; the runs are created in one transaction with the
call's audit row, and go through the gate like any other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, cast

from fastapi import HTTPException
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.routes.bulk import MAX_LIMIT
from jobmanager.admin.routes.common import API, SmallId, When, deliver
from jobmanager.admin.routes.jobs import Renderer
from jobmanager.admin.state import DB, Pub
from jobmanager.jobs.matching import JobIndex
from jobmanager.jobs.planning import planned_run
from jobmanager.jobs.renderer import Crashed, RenderPool, Templates
from jobmanager.jobs.spec import JobSpec, PlannedRun
from jobmanager.store import jobs as job_store
from jobmanager.store import ledger, settings
from jobmanager.store.models import Event, Run
from jobmanager.store.outbox import Outbox

router = auth_router(prefix=API, tags=["jobs"])

events = cast(Table, Event.__table__)
runs = cast(Table, Run.__table__)

MAX_SCAN = 100_000  # events read per call: a window past it is replayed in several calls
CHUNK = 1_000  # events read, and rendered, at a time


def _json_int(value: object) -> object:
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


class ReplayIn(BaseModel):
    """The window of recorded events (by when they were received) and how many runs at most."""

    model_config = ConfigDict(extra="forbid")

    since: When
    until: When | None = Field(None, description="the end of the window (now if left out)")
    dry_run: StrictBool = False
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_json_int)] = Field(
        1000, description="runs to create at most (matching events without a run)"
    )


class ReplayOut(BaseModel):
    scanned: int = Field(description="recorded events of the window read")
    matched: int = Field(description="of them, the events the job matches")
    enqueued: int = Field(description="runs created (for a dry run: that would be)")
    skipped: int = Field(description="matching events that already have a run of this job")
    crashed: int = Field(0, description="events whose templates crashed the renderer every time")
    more: bool = Field(description="whether the window holds more events past those read")
    next_since: datetime | None = Field(description="`since` for the next call, when `more`")
    dry_run: bool


async def _candidates(
    conn: AsyncConnection, job_id: int, spec: JobSpec, body: ReplayIn, until: datetime
) -> tuple[list[Any], int, int, datetime | None]:
    """The window's matching events without a run of the job (oldest first, at most
    `limit`), how many events were read and matched, and where the reading stopped if it did
    before the window's end."""
    index = JobIndex([(spec.trigger, None)])
    window = (events.c.received_at >= body.since) & (events.c.received_at < until)
    wanted: list[Any] = []
    scanned = matched = 0
    after: tuple[datetime, int] | None = None
    while True:
        query = select(events.c.id, events.c.event_id, events.c.received_at, events.c.payload)
        query = _after(query.where(window), after).order_by(events.c.received_at, events.c.id)
        chunk = (await conn.execute(query.limit(min(CHUNK, MAX_SCAN - scanned)))).all()
        if not chunk:
            return wanted, scanned, matched, None
        hits = {row.id for row in chunk if index.match(row.payload)}
        ran = set(
            await conn.scalars(
                select(runs.c.event_pk).where(runs.c.job_id == job_id, runs.c.event_pk.in_(hits))
            )
        )
        for row in chunk:
            scanned += 1
            here = (row.received_at, row.id)
            if row.id not in hits:
                continue
            matched += 1
            if row.id not in ran:
                wanted.append(row)
                if len(wanted) == body.limit:
                    break
        after = here
        if len(wanted) == body.limit or scanned >= MAX_SCAN:
            rest = await conn.scalar(_after(select(events.c.id).where(window), after).limit(1))
            return wanted, scanned, matched, here[0] if rest is not None else None


def _after(query: Any, after: tuple[datetime, int] | None) -> Any:
    """The events after `after` (received_at, id), in the reading order."""
    if after is None:
        return query
    return query.where(
        (events.c.received_at > after[0])
        | ((events.c.received_at == after[0]) & (events.c.id > after[1]))
    )


async def _plan(
    renderer: RenderPool, job_id: int, spec: JobSpec, rows: list[Any]
) -> tuple[list[tuple[int, str, PlannedRun]], int]:
    templates = Templates(spec.command_template, spec.lane)
    planned: list[tuple[int, str, PlannedRun]] = []
    crashed = 0
    for start in range(0, len(rows), CHUNK):
        part = rows[start : start + CHUNK]
        outcomes = await renderer.render([(row.payload, [templates]) for row in part])
        for row, outcome in zip(part, outcomes, strict=True):
            if isinstance(outcome, Crashed):
                crashed += 1
            else:
                planned.append((row.id, row.event_id, planned_run(job_id, spec, outcome[0])))
    return planned, crashed


@router.post("/jobs/{job_id:int}/replay", response_model=ReplayOut)
async def replay(
    job_id: SmallId,
    body: ReplayIn,
    db: DB,
    publisher: Pub,
    renderer: Renderer,
    caller: Annotated[Principal, requires("admin")],
) -> ReplayOut:
    """Match the recorded events received in [since, until) against the job as it is now
    and give each match that has no run of this job one (queued, through the gate as any
    run). `dry_run` only counts. A disabled job is refused (409)."""
    now = datetime.now(UTC)
    until = body.until or now
    async with db.connect() as conn:
        row = await job_store.get(conn, job_id)
        if row is None:
            raise HTTPException(404, f"job {job_id} does not exist")
        if not row.enabled:
            raise HTTPException(409, f"job {row.name!r} is disabled: enable it to replay events")
        spec = job_store.to_spec(row)
        wanted, scanned, matched, stopped = await _candidates(conn, job_id, spec, body, until)
    planned, crashed = ([], 0) if body.dry_run else await _plan(renderer, job_id, spec, wanted)
    detail: dict[str, object] = body.model_dump(mode="json", exclude_none=True)
    outbox = Outbox()
    enqueued = len(wanted) if body.dry_run else 0
    async with audited(db, caller, "jobs.replay", f"job:{job_id}", detail) as conn:
        if planned:
            queue = await settings.load(conn, "queue", settings.QueueSettings)
            done = await ledger.replay(conn, planned, interval_s=queue.interval_s, now=now)
            outbox, enqueued = done.outbox, sum(done.recorded)
        # Already run: those found so, and those a run was made for meanwhile (the ledger's
        # key skipped them).
        skipped = matched - enqueued - crashed
        detail.update(scanned=scanned, matched=matched, enqueued=enqueued, skipped=skipped)
    await deliver(publisher, outbox, now)
    return ReplayOut(
        scanned=scanned,
        matched=matched,
        enqueued=enqueued,
        skipped=skipped,
        crashed=crashed,
        more=stopped is not None,
        next_since=stopped,
        dry_run=body.dry_run,
    )

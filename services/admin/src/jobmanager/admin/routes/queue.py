"""The Queue page: waiting and running runs (newest first, or in the order they will start,
each with its place in its lane); Remove, Cancel and Execute Now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from fastapi import Depends, Query
from pydantic import Field
from sqlalchemy import Select, Table, case, func, literal, select, true, tuple_, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.queries import (
    RunFilters,
    decode_cursor,
    encode_cursor,
    list_runs,
    run_out,
    text_filter,
)
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
from jobmanager.store.models import QUEUE_STATES, Job, Lane, Run

router = auth_router(prefix=API, tags=["queue"])
runs = cast(Table, Run.__table__)
lanes = cast(Table, Lane.__table__)
jobs = cast(Table, Job.__table__)


class QueueRunOut(RunOut):
    position: int | None = Field(
        description="its place in its lane's order: 1 is the run the lane runs now or next, "
        "2 the one after it, and so on; null for a run without a lane (and, newest first, "
        "for a run more than 1,000 runs back in its lane)"
    )
    paused: bool = Field(
        False, description="waiting because its job is paused: it runs once the job is resumed"
    )


Order = Literal["newest", "start"]
# How far back in a lane the newest-first Queue counts positions (a deeper run has none).
POSITIONS_COUNTED = 1000


def _lane_order() -> tuple[Any, Any]:
    """Each queue run's place in its lane (null without a lane) and when it is due, over
    runs joined to their lanes: the lane's head (its active or scheduled run) first, then
    Execute Now first, then enqueue order: the order the ledger takes them in."""
    place = func.row_number().over(
        partition_by=runs.c.lane,
        order_by=[
            case((runs.c.id == lanes.c.head_run_id, 0), else_=1),
            runs.c.execute_now_at.asc().nulls_last(),
            runs.c.id,
        ],
    )
    position = case((runs.c.lane.is_(None), None), else_=place)
    due = func.coalesce(runs.c.dispatched_at, runs.c.not_before, runs.c.enqueued_at)
    return position, due


def _in_queue(query: Select[Any]) -> Select[Any]:
    return query.select_from(runs.outerjoin(lanes, lanes.c.name == runs.c.lane)).where(
        runs.c.state.in_(QUEUE_STATES)
    )


async def _by_start(
    conn: AsyncConnection, filters: RunFilters, *, limit: int, cursor: str | None
) -> Page[QueueRunOut]:
    """The Queue in the order it will run: every lane's next run (and the runs without a
    lane), those already dispatched or running first, then by when each is due; then every
    lane's second run, and so on."""
    position, due = _lane_order()
    inner = _in_queue(
        select(
            runs,
            position.label("position"),
            func.coalesce(position, 1).label("rank"),
            case((runs.c.state == "queued", 1), else_=0).label("waiting"),
            due.label("due"),
        )
    ).subquery()
    query = select(inner)
    conditions = [
        inner.c.job_name == filters.job if filters.job is not None else None,
        inner.c.lane == filters.lane if filters.lane is not None else None,
        inner.c.state == filters.state if filters.state is not None else None,
        inner.c.enqueued_at >= filters.since if filters.since is not None else None,
        inner.c.enqueued_at < filters.until if filters.until is not None else None,
        text_filter([inner.c.command, inner.c.feedback], filters.q),
    ]
    for condition in conditions:
        if condition is not None:
            query = query.where(condition)
    key = (inner.c.rank, inner.c.waiting, inner.c.due, inner.c.id)
    if cursor is not None:
        after = decode_cursor(cursor, [int, int, datetime, int])
        query = query.where(tuple_(*key) > tuple_(*after))
    rows = (await conn.execute(query.order_by(*key).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    next_cursor = encode_cursor([last.rank, last.waiting, last.due, last.id]) if last else None
    paused = await _paused_jobs(conn)
    items = [
        QueueRunOut(
            **run_out(row).model_dump(),
            position=row.position,
            paused=row.state == "queued" and row.job_id in paused,
        )
        for row in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


async def _paused_jobs(conn: AsyncConnection) -> set[int]:
    """The jobs paused now (a handful at most: read whole, not joined to every row)."""
    return set(await conn.scalars(select(jobs.c.id).where(jobs.c.paused)))


async def _positions(conn: AsyncConnection, page: Page[RunOut]) -> dict[int, int]:
    """The place in its lane of each run of a page, in time bounded by the page, not by the
    lanes' depth: each lane's head is 1, and its first POSITIONS_COUNTED waiting runs are
    read in the ledger's order from the index that serves `ledger_advance`. A run further
    back gets no position."""
    names = sorted({run.lane for run in page.items if run.lane is not None})
    if not names:
        return {}
    waiting = (
        select(runs.c.id, runs.c.execute_now_at)
        .where(
            runs.c.lane == lanes.c.name,
            runs.c.state == "queued",
            runs.c.id.is_distinct_from(lanes.c.head_run_id),
        )
        .order_by(runs.c.execute_now_at.asc().nulls_last(), runs.c.id)
        .limit(POSITIONS_COUNTED)
        .lateral("waiting")
    )
    behind_head = case((lanes.c.head_run_id.is_(None), 0), else_=1)
    place = behind_head + func.row_number().over(
        partition_by=lanes.c.name,
        order_by=[waiting.c.execute_now_at.asc().nulls_last(), waiting.c.id],
    )
    others = (
        select(waiting.c.id, place.label("position"))
        .select_from(lanes.join(waiting, true()))
        .where(lanes.c.name.in_(names))
    )
    heads = select(lanes.c.head_run_id.label("id"), literal(1).label("position")).where(
        lanes.c.name.in_(names), lanes.c.head_run_id.is_not(None)
    )
    rows = (await conn.execute(union_all(heads, others))).all()
    return {row.id: row.position for row in rows}


@router.get("/queue", response_model=Page[QueueRunOut])
async def queue(
    db: DB,
    _: Annotated[Principal, requires("viewer")],
    filters: Annotated[RunFilters, Depends(queue_filters)],
    limit: Limit = 50,
    cursor: Cursor = None,
    order: Annotated[
        Order,
        Query(
            description="`newest`: newest first (by run id); `start`: in the order the runs "
            "will start (each lane's next run by when it is due, then each lane's second, "
            "...). A cursor belongs to the order that gave it out."
        ),
    ] = "newest",
) -> Page[QueueRunOut]:
    """Runs waiting, dispatched or running, newest first (or, with `order=start`, in the
    order they will start), each with its position in its lane."""
    async with db.connect() as conn:
        if order == "start":
            return await _by_start(conn, filters, limit=limit, cursor=cursor)
        page = await list_runs(conn, "queue", filters, limit=limit, cursor=cursor)
        places = await _positions(conn, page)
        paused = await _paused_jobs(conn)
    items = [
        QueueRunOut(
            **run.model_dump(),
            position=places.get(run.id),
            paused=run.state == "queued" and run.job_id in paused,
        )
        for run in page.items
    ]
    return Page(items=items, next_cursor=page.next_cursor)


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


@router.post("/queue/{run_id:int}/cancel", response_model=RunDetail)
async def cancel(
    run_id: RunId, db: DB, publisher: Pub, caller: Annotated[Principal, requires("operator")]
) -> RunDetail:
    """Cancel a run: a waiting one is removed, as by Remove; a dispatched or running one
    ends Failed at once (Result 2, Feedback "cancelled by <key>", no retry), its lane moves
    on, and its executor stops the script: SIGTERM to its process group, SIGKILL after the
    job's `cancel_grace_s`. A run that has ended cannot be cancelled (409)."""
    now = datetime.now(UTC)
    async with audited(db, caller, "queue.cancel", f"run:{run_id}") as conn:
        interval = (await settings.load(conn, "queue", settings.QueueSettings)).interval_s
        outbox = await ledger.cancel(conn, run_id, actor=caller.name, interval_s=interval, now=now)
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

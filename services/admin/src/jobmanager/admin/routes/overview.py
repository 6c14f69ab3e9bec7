"""Read-only views across tables: recent events, the audit log, scripts, executors, stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

from fastapi import Query, Request
from sqlalchemy import Table, func, select

from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.queries import page_by_id, text_filter
from jobmanager.admin.routes.common import API, Cursor, Limit
from jobmanager.admin.routes.jobs import known_scripts
from jobmanager.admin.schemas import (
    AuditOut,
    EventOut,
    EventRun,
    ExecutorOut,
    Page,
    ScriptOut,
    StatsOut,
)
from jobmanager.admin.state import DB, Settings
from jobmanager.store.models import QUEUE_STATES, AuditEntry, Event, Executor, Job, Lane, Run

router = auth_router(prefix=API, tags=["overview"])
events = cast(Table, Event.__table__)
runs = cast(Table, Run.__table__)
audit = cast(Table, AuditEntry.__table__)
executors = cast(Table, Executor.__table__)
lanes = cast(Table, Lane.__table__)
Text = Annotated[str | None, Query(max_length=200)]


@router.get("/events", response_model=Page[EventOut])
async def list_events(
    db: DB,
    _: Annotated[Principal, requires("viewer")],
    event_type: Text = None,
    event_id: Text = None,
    matched: Annotated[
        bool | None, Query(description="true: events that matched a job; false: no job")
    ] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[EventOut]:
    """Recently received events and the runs each caused, newest first."""
    query = select(events)
    if event_type is not None:
        query = query.where(events.c.event_type == event_type)
    if event_id is not None:
        query = query.where(events.c.event_id == event_id)
    if matched is not None:
        query = query.where(events.c.matched > 0 if matched else events.c.matched == 0)
    async with db.connect() as conn:
        rows, next_cursor = await page_by_id(conn, query, events.c.id, limit=limit, cursor=cursor)
        caused: dict[int, list[EventRun]] = {}
        if rows:
            for r in (
                await conn.execute(
                    select(runs.c.id, runs.c.job_name, runs.c.state, runs.c.event_pk)
                    .where(runs.c.event_pk.in_([row.id for row in rows]))
                    .order_by(runs.c.id)
                )
            ).all():
                caused.setdefault(r.event_pk, []).append(
                    EventRun(id=r.id, job=r.job_name, state=r.state)
                )
    items = [
        EventOut(
            id=r.id,
            event_id=r.event_id,
            event_type=r.event_type,
            source=r.source,
            occurred_at=r.occurred_at,
            received_at=r.received_at,
            matched=r.matched,
            data=r.payload.get("data", {}),
            runs=caused.get(r.id, []),
        )
        for r in rows
    ]
    return Page(items=items, next_cursor=next_cursor)


@router.get("/audit", response_model=Page[AuditOut])
async def list_audit(
    db: DB,
    _: Annotated[Principal, requires("viewer")],
    actor: Text = None,
    action: Text = None,
    q: Text = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[AuditOut]:
    """Every mutating call: who, what, on what, when, and how it ended; newest first."""
    query = select(audit)
    if actor is not None:
        query = query.where(audit.c.actor == actor)
    if action is not None:
        query = query.where(audit.c.action == action)
    if (match := text_filter([audit.c.target], q)) is not None:
        query = query.where(match)
    async with db.connect() as conn:
        rows, next_cursor = await page_by_id(conn, query, audit.c.id, limit=limit, cursor=cursor)
    return Page(items=[AuditOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/scripts", response_model=list[ScriptOut])
async def list_scripts(
    db: DB, settings: Settings, _: Annotated[Principal, requires("viewer")]
) -> list[ScriptOut]:
    """The scripts the executors reported (the catalogue jobs are checked against)."""
    async with db.connect() as conn:
        known = await known_scripts(conn, settings.executor_report_window_s)
    return [ScriptOut(name=n, executors=sorted(e)) for n, e in sorted(known.items())]


@router.get("/executors", response_model=list[ExecutorOut])
async def list_executors(
    db: DB, settings: Settings, _: Annotated[Principal, requires("viewer")]
) -> list[ExecutorOut]:
    """Executors that reported lately, with their scripts and capacity."""
    since = datetime.now(UTC) - timedelta(seconds=settings.executor_report_window_s)
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                select(executors).where(executors.c.last_seen_at >= since).order_by(executors.c.id)
            )
        ).all()
    return [ExecutorOut.model_validate(r) for r in rows]


async def table_counts(db: Any) -> dict[str, int]:
    """Rows per table and lane activity (also the source of the Prometheus gauges)."""
    async with db.connect() as conn:
        states = dict(
            (await conn.execute(select(runs.c.state, func.count()).group_by(runs.c.state))).all()
        )
        jobs = await conn.scalar(select(func.count()).select_from(Job.__table__)) or 0
        heads = dict(
            (
                await conn.execute(
                    select(runs.c.state, func.count())
                    .select_from(lanes.join(runs, runs.c.id == lanes.c.head_run_id))
                    .group_by(runs.c.state)
                )
            ).all()
        )
    return {
        "jobs": jobs,
        "queue": sum(states.get(s, 0) for s in QUEUE_STATES),
        "queued": states.get("queued", 0),
        "executed": states.get("succeeded", 0),
        "failed": states.get("failed", 0),
        "lanes_busy": heads.get("dispatched", 0) + heads.get("running", 0),
        "lanes_waiting": heads.get("queued", 0),
    }


@router.get("/stats", response_model=StatsOut)
async def stats(
    request: Request, db: DB, settings: Settings, _: Annotated[Principal, requires("viewer")]
) -> StatsOut:
    """Counts per table, lanes busy and waiting, executors, dead letters."""
    counts = await table_counts(db)
    since = datetime.now(UTC) - timedelta(seconds=settings.executor_report_window_s)
    async with db.connect() as conn:
        seen = (
            await conn.scalar(
                select(func.count()).select_from(executors).where(executors.c.last_seen_at >= since)
            )
            or 0
        )
    return StatsOut(
        jobs=counts["jobs"],
        queue=counts["queue"],
        executed=counts["executed"],
        failed=counts["failed"],
        lanes_busy=counts["lanes_busy"],
        lanes_waiting=counts["lanes_waiting"],
        executors=seen,
        dead_letters=await request.app.state.broker.dead_letters(),
    )

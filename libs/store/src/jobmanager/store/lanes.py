"""Lane mechanics of the ledger: locking, scheduling a run, moving a lane's head on.

Only `jobmanager.store.ledger` calls these; they run inside its transactions. The lock order
is always the lane row first, then the run row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.core.messages import JobRef, JobRequest, RunNotice
from jobmanager.store.models import ACTIVE_STATES, Lane, Run
from jobmanager.store.outbox import Outbox

# Core tables rather than ORM objects: the ledger is on the hot path of every run.
runs = cast(Table, Run.__table__)
lanes = cast(Table, Lane.__table__)


def request_for(run: Row[Any], now: datetime) -> JobRequest:
    return JobRequest(
        run_id=run.id,
        attempt=run.attempt,
        token=run.token,
        job=JobRef(id=run.job_id, name=run.job_name),
        script=run.script,
        command=run.command,
        timeout_s=run.timeout_s,
        lane=run.lane,
        event_id=run.event_id,
        not_before=run.not_before,
        requested_at=now,
    )


def notice_for(run: Row[Any], state: str, now: datetime) -> RunNotice:
    return RunNotice(
        run_id=run.id,
        state=state,
        attempt=run.attempt,
        job=run.job_name,
        lane=run.lane,
        event_id=run.event_id,
        result=run.result,
        feedback=run.feedback,
        at=now,
    )


async def lock_lane(conn: AsyncConnection, name: str | None) -> Row[Any] | None:
    if name is None:
        return None
    locking = select(lanes).where(lanes.c.name == name).with_for_update()
    row = (await conn.execute(locking)).one_or_none()
    if row is None:
        await conn.execute(insert(lanes).values(name=name).on_conflict_do_nothing())
        row = (await conn.execute(locking)).one()
    return row


async def lock_run(conn: AsyncConnection, run_id: int) -> Row[Any] | None:
    return (
        await conn.execute(select(runs).where(runs.c.id == run_id).with_for_update())
    ).one_or_none()


async def lane_of(conn: AsyncConnection, run_id: int) -> tuple[bool, str | None]:
    """(exists, lane) of a run, read without a lock: a run's lane never changes."""
    row = (await conn.execute(select(runs.c.lane).where(runs.c.id == run_id))).one_or_none()
    return (row is not None, row.lane if row is not None else None)


async def schedule(conn: AsyncConnection, run_id: int, not_before: datetime) -> Row[Any]:
    """Give a queued run a new token and due time: the request that carries them becomes the
    only one the gate accepts for it."""
    return (
        await conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(token=runs.c.token + 1, not_before=not_before)
            .returning(*runs.c)
        )
    ).one()


def lane_slot(lane: Row[Any], interval_s: float, now: datetime) -> datetime:
    """The earliest start for the lane's next run: the interval after the last finish."""
    last: datetime | None = lane.last_finished_at
    if last is None:
        return now
    return max(now, last + timedelta(seconds=interval_s))


async def advance(
    conn: AsyncConnection, lane: Row[Any], not_before: datetime, now: datetime
) -> Outbox:
    """Make the lane's next queued run its head, scheduled at `not_before` (at once if an
    operator asked to execute it now). With nothing queued the lane becomes idle."""
    nxt = (
        await conn.execute(
            select(runs.c.id, runs.c.execute_now_at)
            .where(runs.c.lane == lane.name, runs.c.state == "queued")
            .order_by(runs.c.execute_now_at.asc().nulls_last(), runs.c.id)
            .limit(1)
            .with_for_update()
        )
    ).one_or_none()
    await conn.execute(
        update(lanes).where(lanes.c.name == lane.name).values(head_run_id=nxt.id if nxt else None)
    )
    if nxt is None:
        return Outbox()
    when = now if nxt.execute_now_at is not None else not_before
    return Outbox(requests=[request_for(await schedule(conn, nxt.id, when), now)])


async def take_head_now(
    conn: AsyncConnection, lane: Row[Any] | None, run_id: int, now: datetime
) -> Outbox:
    """Schedule a run at once unless its lane has an active run (then `_advance` picks it
    first when that run finishes). The lane's previous scheduled head goes back to waiting;
    its request in the broker is now stale and will be dropped by the gate."""
    if lane is not None and lane.head_run_id not in (None, run_id):
        head_state = await conn.scalar(select(runs.c.state).where(runs.c.id == lane.head_run_id))
        if head_state in ACTIVE_STATES:
            return Outbox()
        # The previous head waits again like any other queued run of the lane.
        await conn.execute(
            update(runs).where(runs.c.id == lane.head_run_id).values(not_before=None)
        )
    if lane is not None:
        await conn.execute(
            update(lanes).where(lanes.c.name == lane.name).values(head_run_id=run_id)
        )
    return Outbox(requests=[request_for(await schedule(conn, run_id, now), now)])

"""The ledger: the only code that changes a run's state.

Every transition of the run lifecycle (SPEC §5) is one function here, called inside the
caller's transaction (so that the admin service can write its audit row in the same one).
Each returns an `Outbox`: the job requests and run notices to publish once the transaction
has committed. Publishing after commit and acking the input after the publish is what makes
the pipeline at-least-once; the checks here (states, attempts, tokens, the unique event key)
are what make a redelivered message change nothing.

Lanes. A lane's `head_run_id` is the one run that owns the lane: scheduled (queued, with a
request in the broker) or active (dispatched or running). Only the head is ever in the broker;
the lane's other waiting runs stay in Postgres. Every function that moves a head locks the
lane row first and then the run row, always in that order, so transitions of one lane are
serialised and cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.core.messages import Event, JobRequest, JobResult, RunStarted
from jobmanager.store import lanes
from jobmanager.store.models import ACTIVE_STATES, Attempt, Lane, Run
from jobmanager.store.models import Event as EventRow
from jobmanager.store.outbox import Outbox

# Core tables rather than ORM objects: the ledger is on the hot path of every run.
runs = cast(Table, Run.__table__)
lane_rows = cast(Table, Lane.__table__)
attempts = cast(Table, Attempt.__table__)


@dataclass(frozen=True)
class PlannedRun:
    """A run the matcher wants created. `error` set: it could not be prepared (its
    template failed) and is recorded as Failed with that Feedback instead of being lost."""

    job_id: int | None
    job_name: str
    script: str
    command: str
    lane: str | None
    timeout_s: float = 600.0
    max_attempts: int = 1
    retry_backoff_s: float = 0.0
    error: str | None = None


def planned_values(p: PlannedRun, event: Event, now: datetime) -> dict[str, Any]:
    """The new `runs` row of a planned run (queued, or failed if it could not be prepared),
    but for the key of its event's row."""
    prepared = p.error is None
    return {
        "job_id": p.job_id,
        "job_name": p.job_name,
        "script": p.script,
        "command": p.command,
        "lane": p.lane,
        "event_id": event.event_id,
        "state": "queued" if prepared else "failed",
        "max_attempts": p.max_attempts,
        "retry_backoff_s": p.retry_backoff_s,
        "timeout_s": p.timeout_s,
        "enqueued_at": now,
        "result": None if prepared else 2,
        "feedback": p.error or "",
        "finished_at": None if prepared else now,
        # A run without a lane is its own head: scheduled at once.
        "token": 1 if p.lane is None and prepared else 0,
        "not_before": now if p.lane is None and prepared else None,
    }


def run_values(p: PlannedRun, event: Event, event_pk: int, now: datetime) -> dict[str, Any]:
    """The new `runs` row of a planned run (`planned_values`) for its event's row."""
    return {**planned_values(p, event, now), "event_pk": event_pk}


async def insert_runs(
    conn: AsyncConnection, values: list[dict[str, Any]], now: datetime
) -> list[Row[Any]]:
    """Insert new runs (`run_values`); those that could not be prepared get their one,
    failed attempt with them."""
    created = list((await conn.execute(insert(runs).returning(*runs.c), values)).all())
    failed = [r for r in created if r.state == "failed"]
    if failed:
        await conn.execute(
            insert(attempts),
            [
                {
                    "run_id": r.id,
                    "attempt": 1,
                    "finished_at": now,
                    "result": 2,
                    "feedback": r.feedback,
                }
                for r in failed
            ],
        )
    return created


class LedgerError(Exception):
    """An operator action that the run's state does not allow."""


class RunNotFound(LedgerError):
    pass


class Conflict(LedgerError):
    pass


@dataclass(frozen=True)
class Dispatch:
    """The gate may send this request to the executors."""

    request: JobRequest


@dataclass(frozen=True)
class Wait:
    """The request came early; it is due at `until`."""

    until: datetime


@dataclass(frozen=True)
class Stale:
    """The request is no longer wanted (removed, executed, rescheduled, duplicate)."""

    reason: str


# -- helpers -------------------------------------------------------------------------------


async def _lock_for_action(conn: AsyncConnection, run_id: int) -> tuple[Row[Any] | None, Row[Any]]:
    """Lock an operator action's run and its lane (lane first), or raise RunNotFound."""
    exists, lane_name = await lanes.lane_of(conn, run_id)
    lane = await lanes.lock_lane(conn, lane_name) if exists else None
    run = await lanes.lock_run(conn, run_id) if exists else None
    if run is None:
        raise RunNotFound(f"run {run_id} does not exist")
    return lane, run


# -- the lifecycle ---------------------------------------------------------------------------


async def enqueue(
    conn: AsyncConnection,
    *,
    event: Event,
    planned: list[PlannedRun],
    interval_s: float,
    now: datetime,
) -> Outbox | None:
    """Record an event and create its runs; None if the event was seen before.

    The unique (source, event_id) key makes a duplicate or redelivered event create nothing.
    Lanes that were idle get their first new run as head, due after the lane's interval.
    """
    event_pk = await conn.scalar(
        insert(EventRow)
        .values(
            source=event.source,
            event_id=event.event_id,
            event_type=event.event_type,
            occurred_at=event.occurred_at,
            received_at=now,
            payload=event.document(),
            matched=len(planned),
        )
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(EventRow.id)
    )
    if event_pk is None:
        return None
    outbox = Outbox()
    if not planned:
        return outbox
    # Lanes first, in name order (the lock order everywhere), then the runs: ids handed out
    # under the lane lock keep a lane's enqueue order equal to its commit order.
    locked = {}
    for name in sorted({p.lane for p in planned if p.lane is not None and p.error is None}):
        locked[name] = await lanes.lock_lane(conn, name)
    values = [run_values(p, event, event_pk, now) for p in planned]
    created = await insert_runs(conn, values, now)
    for run in created:
        outbox.notices.append(lanes.notice_for(run, run.state, now))
        if run.state == "queued" and run.lane is None:
            outbox.requests.append(lanes.request_for(run, now))
    for lane in locked.values():
        if lane is not None and lane.head_run_id is None:
            outbox.extend(
                await lanes.advance(conn, lane, lanes.lane_slot(lane, interval_s, now), now)
            )
    return outbox


async def gate(
    conn: AsyncConnection, request: JobRequest, *, now: datetime
) -> Dispatch | Wait | Stale:
    """Decide on a request that came due: dispatch it, wait for its time, or drop it.

    Dispatching marks the run dispatched and opens its attempt; the caller publishes the
    returned request (with the event attached) to the work queue after commit.
    """
    lane = await lanes.lock_lane(conn, request.lane)
    run = await lanes.lock_run(conn, request.run_id)
    if run is None:
        return Stale("the run no longer exists")
    if run.state != "queued":
        return Stale(f"the run is {run.state}")
    if (run.attempt, run.token) != (request.attempt, request.token):
        return Stale("the run was rescheduled")
    if lane is not None and lane.head_run_id != run.id:
        return Stale("the run is not its lane's head")
    if run.not_before is not None and run.not_before > now:
        return Wait(run.not_before)
    run = (
        await conn.execute(
            update(runs)
            .where(runs.c.id == run.id)
            .values(state="dispatched", dispatched_at=now)
            .returning(*runs.c)
        )
    ).one()
    await conn.execute(
        insert(attempts)
        .values(run_id=run.id, attempt=run.attempt, dispatched_at=now)
        .on_conflict_do_update(index_elements=["run_id", "attempt"], set_={"dispatched_at": now})
    )
    return Dispatch(await _work_request(conn, run, now))


async def _work_request(conn: AsyncConnection, run: Row[Any], now: datetime) -> JobRequest:
    """A dispatched run's request to the executors, with its event attached."""
    payload = None
    if run.event_pk is not None:
        payload = await conn.scalar(select(EventRow.payload).where(EventRow.id == run.event_pk))
    return lanes.request_for(run, now).model_copy(update={"event": payload})


async def record_started(conn: AsyncConnection, started: RunStarted, *, now: datetime) -> Outbox:
    """An executor began the script: the run is running. A repeat changes nothing."""
    run = (
        await conn.execute(
            update(runs)
            .where(
                runs.c.id == started.run_id,
                runs.c.attempt == started.attempt,
                runs.c.state == "dispatched",
            )
            .values(state="running", started_at=started.started_at, executor=started.executor)
            .returning(*runs.c)
        )
    ).one_or_none()
    if run is None:
        return Outbox()
    await conn.execute(
        update(attempts)
        .where(attempts.c.run_id == run.id, attempts.c.attempt == run.attempt)
        .values(started_at=started.started_at, executor=started.executor)
    )
    return Outbox(notices=[lanes.notice_for(run, "running", now)])


async def record_result(
    conn: AsyncConnection,
    result: JobResult,
    *,
    interval_s: float,
    now: datetime,
    may_retry: bool = True,
) -> Outbox:
    """Record an attempt's result, then retry the run or end it and advance its lane.

    A result for an attempt that is not the run's active one (a duplicate, or one that
    arrives after an operator moved on) changes nothing. `may_retry=False` ends a failed
    run even if it has attempts left (a request the broker gave up on).
    """
    exists, lane_name = await lanes.lane_of(conn, result.run_id)
    if not exists:
        return Outbox()
    lane = await lanes.lock_lane(conn, lane_name)
    run = await lanes.lock_run(conn, result.run_id)
    if run is None or run.attempt != result.attempt or run.state not in ACTIVE_STATES:
        return Outbox()
    finished = min(result.finished_at, now)
    outcome = {
        "result": result.result,
        "feedback": result.feedback,
        "executor": result.executor,
        "output_tail": result.output_tail,
    }
    await conn.execute(
        update(attempts)
        .where(attempts.c.run_id == run.id, attempts.c.attempt == run.attempt)
        .values(
            started_at=func.coalesce(attempts.c.started_at, result.started_at),
            finished_at=finished,
            **outcome,
        )
    )
    retry = may_retry and result.result == 2 and run.attempt < run.max_attempts
    common = {"started_at": func.coalesce(runs.c.started_at, result.started_at), **outcome}
    if retry:
        # The run stays its lane's head and waits for the backoff (and the interval).
        wait = max(run.retry_backoff_s, interval_s if lane is not None else 0.0)
        changes = {
            "state": "queued",
            "attempt": run.attempt + 1,
            "token": run.token + 1,
            "not_before": finished + timedelta(seconds=wait),
            "execute_now_at": None,
            "dispatched_at": None,
            **common,
        }
    else:
        changes = {
            "state": "succeeded" if result.result == 3 else "failed",
            "finished_at": finished,
            **common,
        }
    run = (
        await conn.execute(
            update(runs).where(runs.c.id == run.id).values(**changes).returning(*runs.c)
        )
    ).one()
    outbox = Outbox(notices=[lanes.notice_for(run, run.state, now)])
    if retry:
        outbox.requests.append(lanes.request_for(run, now))
    if lane is not None:
        await conn.execute(
            update(lane_rows).where(lane_rows.c.name == lane.name).values(last_finished_at=finished)
        )
        if not retry:
            slot = finished + timedelta(seconds=interval_s)
            outbox.extend(await lanes.advance(conn, lane, max(slot, now), now))
    return outbox


async def remove(conn: AsyncConnection, run_id: int, *, interval_s: float, now: datetime) -> Outbox:
    """Remove a queued run (the Queue page's Remove). It will never execute; its lane
    moves on. A dispatched or running run cannot be removed (Conflict)."""
    lane, run = await _lock_for_action(conn, run_id)
    if run.state != "queued":
        raise Conflict(_cannot("removed", run))
    run = (
        await conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(state="removed", finished_at=now, token=runs.c.token + 1)
            .returning(*runs.c)
        )
    ).one()
    outbox = Outbox(notices=[lanes.notice_for(run, "removed", now)])
    if lane is not None and lane.head_run_id == run_id:
        outbox.extend(await lanes.advance(conn, lane, lanes.lane_slot(lane, interval_s, now), now))
    return outbox


async def execute_now(conn: AsyncConnection, run_id: int, *, now: datetime) -> Outbox:
    """Run a queued run next without waiting for the interval (the Execute Now button):
    at once if its lane is idle, else as soon as the lane's active run finishes."""
    lane, run = await _lock_for_action(conn, run_id)
    if run.state != "queued":
        raise Conflict(_cannot("executed now", run))
    await conn.execute(update(runs).where(runs.c.id == run_id).values(execute_now_at=now))
    return await lanes.take_head_now(conn, lane, run_id, now)


async def execute_failed(conn: AsyncConnection, run_id: int, *, now: datetime) -> Outbox:
    """Execute a failed run again (the Failed page's Execute): a new attempt, run now.
    Earlier attempts and their Feedback stay in its history."""
    lane, run = await _lock_for_action(conn, run_id)
    if run.state != "failed":
        raise Conflict(f"run {run_id} is {run.state}: only a failed run can be executed again")
    await conn.execute(
        update(runs)
        .where(runs.c.id == run_id)
        .values(
            state="queued",
            attempt=run.attempt + 1,
            max_attempts=run.attempt + 1,  # one manual attempt, no automatic retries
            execute_now_at=now,
            finished_at=None,
            dispatched_at=None,
        )
    )
    outbox = await lanes.take_head_now(conn, lane, run_id, now)
    run = (await conn.execute(select(runs).where(runs.c.id == run_id))).one()
    outbox.notices.insert(0, lanes.notice_for(run, "queued", now))
    return outbox


def _cannot(action: str, run: Row[Any]) -> str:
    if run.state in ACTIVE_STATES:
        return (
            f"run {run.id} is already {run.state} on an executor and cannot be {action}; "
            "it will end in Executed or Failed"
        )
    return f"run {run.id} is {run.state}, not queued, and cannot be {action}"


def _lost(run: Row[Any], feedback: str, now: datetime) -> JobResult:
    """The result recorded for an attempt whose executor never reported one."""
    return JobResult(
        run_id=run.id,
        attempt=run.attempt,
        result=2,
        status="failed",
        feedback=feedback,
        started_at=run.started_at or run.dispatched_at or now,
        finished_at=now,
        executor=run.executor or "unknown",
    )


async def fail_lost(
    conn: AsyncConnection,
    request: JobRequest,
    *,
    deliveries: int,
    interval_s: float,
    now: datetime,
) -> Outbox:
    """End a run whose request the broker gave up on: its executor died every time it ran
    it (a script that kills its executor, say). It fails for good, with that as Feedback."""
    run = (await conn.execute(select(runs).where(runs.c.id == request.run_id))).one_or_none()
    if run is None or run.attempt != request.attempt or run.state not in ACTIVE_STATES:
        return Outbox()
    feedback = (
        f"executor lost: the request was handed to executors {deliveries} times and each "
        "died before reporting a result (a script that crashes or kills its executor?); "
        "not retried"
    )
    return await record_result(
        conn, _lost(run, feedback, now), interval_s=interval_s, now=now, may_retry=False
    )


async def reap(
    conn: AsyncConnection,
    *,
    now: datetime,
    interval_s: float,
    running_grace_s: float,
    dispatch_grace_s: float,
    work_queue_idle: bool,
    limit: int = 200,
) -> tuple[Outbox, list[JobRequest]]:
    """Runs that would otherwise stay dispatched or running for ever.

    * Running longer than its timeout plus `running_grace_s`: its executor would have killed
      the script and reported by then, and a dead executor's request would have been handed
      on by the broker; so the executor is lost without the broker noticing. The attempt
      fails ("executor lost") and the usual retry rules apply.
    * Dispatched for longer than `dispatch_grace_s` without starting while the work queue is
      idle: the request to the executors was lost (the gate died between its commit and its
      publish). Returned, with the event, to be published to the work queue again.
    """
    outbox = Outbox()
    deadline = runs.c.started_at + func.make_interval(0, 0, 0, 0, 0, 0, runs.c.timeout_s)
    stuck = (
        await conn.execute(
            select(runs)
            .where(runs.c.state == "running", deadline < now - timedelta(seconds=running_grace_s))
            .limit(limit)
        )
    ).all()
    for run in stuck:
        feedback = (
            f"executor lost: no result {run.timeout_s:g} s (the timeout) + "
            f"{running_grace_s:g} s after the script started on {run.executor}"
        )
        outbox.extend(
            await record_result(conn, _lost(run, feedback, now), interval_s=interval_s, now=now)
        )
    resend: list[JobRequest] = []
    if work_queue_idle:
        lost = (
            await conn.execute(
                select(runs)
                .where(
                    runs.c.state == "dispatched",
                    runs.c.dispatched_at < now - timedelta(seconds=dispatch_grace_s),
                )
                .limit(limit)
            )
        ).all()
        resend = [await _work_request(conn, run, now) for run in lost]
    return outbox, resend


async def resend_heads(conn: AsyncConnection, run_ids: list[int], *, now: datetime) -> Outbox:
    """The current requests of the lanes these runs belong to, for a redelivered input whose
    work was committed but whose publishes may have been lost. Re-sending is harmless: the
    gate accepts a run's current token once."""
    outbox = Outbox()
    if not run_ids:
        return outbox
    rows = (await conn.execute(select(runs.c.id, runs.c.lane).where(runs.c.id.in_(run_ids)))).all()
    heads = {r.id for r in rows if r.lane is None}
    named = sorted({r.lane for r in rows if r.lane is not None})
    if named:
        heads |= set(
            (
                await conn.execute(
                    select(lane_rows.c.head_run_id).where(
                        lane_rows.c.name.in_(named), lane_rows.c.head_run_id.is_not(None)
                    )
                )
            )
            .scalars()
            .all()
        )
    if heads:
        pending = (
            await conn.execute(select(runs).where(runs.c.id.in_(heads), runs.c.state == "queued"))
        ).all()
        outbox.requests += [lanes.request_for(run, now) for run in pending]
    return outbox


async def runs_of_event(conn: AsyncConnection, event: Event) -> list[int]:
    """The runs an already recorded event caused."""
    return list(
        (
            await conn.execute(
                select(runs.c.id)
                .select_from(runs.join(EventRow, EventRow.id == runs.c.event_pk))
                .where(EventRow.source == event.source, EventRow.event_id == event.event_id)
            )
        )
        .scalars()
        .all()
    )


async def queued_count(conn: AsyncConnection) -> int:
    """Runs waiting in the queue (the lane backlog)."""
    return int(await conn.scalar(select(func.count()).where(runs.c.state == "queued")) or 0)


async def apply_interval(conn: AsyncConnection, *, interval_s: float, now: datetime) -> Outbox:
    """Reschedule the lanes' waiting heads for a changed interval, so that the change takes
    effect at each lane's next dispatch. Heads waiting for a retry's backoff or marked
    Execute Now keep their time."""
    outbox = Outbox()
    candidates = (
        (
            await conn.execute(
                select(lane_rows.c.name)
                .select_from(lane_rows.join(runs, runs.c.id == lane_rows.c.head_run_id))
                .where(
                    runs.c.state == "queued", runs.c.attempt == 1, runs.c.execute_now_at.is_(None)
                )
                .order_by(lane_rows.c.name)
            )
        )
        .scalars()
        .all()
    )
    for name in candidates:
        lane = await lanes.lock_lane(conn, name)
        if lane is None or lane.head_run_id is None:
            continue
        run = await lanes.lock_run(conn, lane.head_run_id)
        if run is None or run.state != "queued" or run.attempt != 1 or run.execute_now_at:
            continue
        if lane.last_finished_at is None:
            continue  # no run finished in this lane: the interval does not apply
        slot = lanes.lane_slot(lane, interval_s, now)
        already_due = run.not_before is not None and run.not_before <= now and slot <= now
        if slot != run.not_before and not already_due:
            outbox.requests.append(lanes.request_for(await lanes.schedule(conn, run.id, slot), now))
    return outbox


async def check_lanes(
    conn: AsyncConnection, *, interval_s: float, now: datetime, grace_s: float, limit: int = 500
) -> Outbox:
    """Repair lanes that stalled because a request was lost (a crash between commit and
    publish): idle lanes with queued runs get a head, and heads overdue by more than
    `grace_s` are scheduled again with a new token (the old request, should it still
    arrive, is then stale)."""
    outbox = Outbox()
    waiting = runs.alias("waiting")
    idle = (
        await conn.scalars(
            select(lane_rows.c.name)
            .where(
                lane_rows.c.head_run_id.is_(None),
                select(waiting.c.id)
                .where(waiting.c.lane == lane_rows.c.name, waiting.c.state == "queued")
                .exists(),
            )
            .limit(limit)
        )
    ).all()
    for name in idle:
        lane = await lanes.lock_lane(conn, name)
        if lane is not None and lane.head_run_id is None:
            outbox.extend(
                await lanes.advance(conn, lane, lanes.lane_slot(lane, interval_s, now), now)
            )
    overdue = (
        await conn.execute(
            select(runs.c.id, runs.c.lane)
            .where(
                runs.c.state == "queued",
                runs.c.not_before < now - timedelta(seconds=grace_s),
            )
            .order_by(runs.c.not_before)
            .limit(limit)
        )
    ).all()
    for row in overdue:
        lane = await lanes.lock_lane(conn, row.lane)
        run = await lanes.lock_run(conn, row.id)
        if run is None or run.state != "queued":
            continue
        if lane is not None and lane.head_run_id != run.id:
            continue
        outbox.requests.append(lanes.request_for(await lanes.schedule(conn, run.id, now), now))
    return outbox

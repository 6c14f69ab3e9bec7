"""The ledger: the only code that changes a run's state.

Every rule of a run's life is a database function in `ledger.sql`, written once (its header
says how states, lanes, tokens and the lock order fit together). This module is their
caller: it turns the inputs into the functions' arguments and the rows they return into an
`Outbox` (what to publish once the transaction has committed) and the gate's decisions.

Each call is one statement. In an autocommit connection (`db.transaction(engine,
single_statement=True)`, the matcher's consumers) it is its own transaction and one round
trip; in the admin's transaction it commits together with the audit row. A single message is
a batch of one: the consumers, the operator actions and the upkeep all take these paths.

Publishing after commit and acking the input after the publish make the pipeline
at-least-once; the functions' checks (states, attempts, tokens, the unique event key) make a
redelivered message change nothing, and a redelivered input that changes nothing has its
lanes' current requests re-sent, in case the delivery that committed it died before
publishing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, TextualSelect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.core.messages import Event, JobRequest, JobResult, RunStarted
from jobmanager.jobs.spec import PlannedCancel, PlannedRun
from jobmanager.store.outbox import Outbox
from jobmanager.store.outcomes import (
    Acted,
    Changes,
    Conflict,
    Dispatch,
    JobNotFound,
    LedgerError,
    Lost,
    RunNotFound,
    Stale,
    Wait,
    as_json,
    call,
    collect,
    request_for,
)

# Its calls, and (from `outcomes`) what callers catch and match on, under its name.
__all__ = [
    "Acted",
    "Changes",
    "Conflict",
    "Counts",
    "Dispatch",
    "JobNotFound",
    "LedgerError",
    "Lost",
    "RunNotFound",
    "Stale",
    "Wait",
    "apply_interval",
    "cancel",
    "check_lanes",
    "counts",
    "enqueue",
    "execute_failed",
    "execute_failed_runs",
    "execute_now",
    "gate",
    "pause",
    "queued_count",
    "reap",
    "record",
    "remove",
    "remove_runs",
    "replay",
    "resume",
    "unanswered_cancels",
]

_ENQUEUE = call(
    "ledger_enqueue(CAST(:batch AS jsonb), CAST(:planned AS jsonb), CAST(:cancels AS jsonb), "
    ":now, :interval_s, :dispatch)"
)
_CREATE = call("ledger_create(CAST(:planned AS jsonb), :now, :interval_s, false)")
_RECORD = call(
    "ledger_record(CAST(:started AS jsonb), CAST(:results AS jsonb), :now, :interval_s, :dispatch)"
)
_GATE = call("ledger_gate(CAST(:requests AS jsonb), :now, :interval_s)")
_PAUSE = call("ledger_pause(:job_id, :reason, :now, :interval_s)")
_RESUME = call("ledger_resume(:job_id, :now, :interval_s)")
_REMOVE = call("ledger_remove(CAST(:ids AS bigint[]), :now, :interval_s)")
_CANCEL = call("ledger_cancel(:run_id, :actor, :now, :interval_s)")
_EXECUTE_NOW = call("ledger_execute_now(:run_id, :now)")
_EXECUTE_FAILED = call("ledger_execute_failed(CAST(:ids AS bigint[]), :now)")
_APPLY_INTERVAL = call("ledger_apply_interval(:interval_s, :now)")
_UNANSWERED_CANCELS = call("ledger_unanswered_cancels(:now, :quiet_s, :limit)")
_CHECK_LANES = call("ledger_check_lanes(:now, :interval_s, :grace_s, :limit)")
_REAP = call(
    "ledger_reap(:now, :interval_s, :running_grace_s, :dispatch_grace_s, :work_queue_idle, :limit)"
)


def _flags(flags: Sequence[bool], n: int) -> list[bool]:
    return list(flags) if flags else [False] * n


async def enqueue(
    conn: AsyncConnection,
    batch: Sequence[tuple[Event, list[PlannedRun]]],
    *,
    interval_s: float,
    now: datetime,
    dispatch: bool = False,
    redelivered: Sequence[bool] = (),
    cancels: Sequence[Sequence[PlannedCancel]] = (),
) -> Changes:
    """Record each new event of the batch, apply what it cancels (`cancels`, by event, as
    `batch`; none if empty) and create its runs (`ledger_enqueue`). With `dispatch`, the
    runs due at once are dispatched in the same statement (their work is in the outbox)
    instead of going through the gate."""
    if not batch:
        return Changes()
    again = _flags(redelivered, len(batch))
    events = [
        {
            "i": i,
            "source": event.source,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "occurred_at": event.occurred_at,
            "payload": event.document(),
            "matched": len(planned),
            "redelivered": again[i],
        }
        for i, (event, planned) in enumerate(batch)
    ]
    runs = [{"i": i, **vars(p)} for i, (_, planned) in enumerate(batch) for p in planned]
    for n, values in enumerate(runs):  # the order of creation
        values["n"] = n
    ending = [{"i": i, **vars(c)} for i, planned in enumerate(cancels) for c in planned]
    params = {
        "batch": as_json(events),
        "planned": as_json(runs),
        "cancels": as_json(ending),
        "now": now,
        "interval_s": interval_s,
        "dispatch": dispatch,
    }
    return collect(await conn.execute(_ENQUEUE, params), now, len(batch))


async def replay(
    conn: AsyncConnection,
    planned: Sequence[tuple[int, str, PlannedRun]],
    *,
    interval_s: float,
    now: datetime,
) -> Changes:
    """Create runs for recorded events (`ledger_create`): (event's key, its event_id, the
    run); an event that already has a run of the job is skipped (`recorded` is per run)."""
    if not planned:
        return Changes()
    runs = [
        {"n": n, "event_pk": pk, "event_id": event_id, **vars(p)}
        for n, (pk, event_id, p) in enumerate(planned)
    ]
    params = {"planned": as_json(runs), "now": now, "interval_s": interval_s}
    return collect(await conn.execute(_CREATE, params), now, len(runs))


async def record(
    conn: AsyncConnection,
    started: Sequence[RunStarted],
    results: Sequence[JobResult | Lost],
    *,
    interval_s: float,
    now: datetime,
    dispatch: bool = False,
    redelivered: Sequence[bool] = (),
) -> Changes:
    """What executors reported, starts then results (`ledger_record`; `recorded` is per
    result). With `dispatch`, the lanes' next runs and the retries due at once are
    dispatched in the same statement."""
    if not (started or results):
        return Changes(recorded=[False] * len(results))
    again = _flags(redelivered, len(results))
    reports = [{"n": n, "redelivered": again[n], **_result(r)} for n, r in enumerate(results)]
    params = {
        "started": as_json([{"n": n, **s.model_dump(mode="json")} for n, s in enumerate(started)]),
        "results": as_json(reports),
        "now": now,
        "interval_s": interval_s,
        "dispatch": dispatch,
    }
    return collect(await conn.execute(_RECORD, params), now, len(results))


def _result(result: JobResult | Lost) -> dict[str, Any]:
    if isinstance(result, Lost):
        return {**vars(result), "result": 2, "final": True}
    return result.model_dump(mode="json")


async def gate(
    conn: AsyncConnection, requests: Sequence[JobRequest], *, now: datetime, interval_s: float
) -> tuple[list[Dispatch | Wait | Stale], Outbox]:
    """Decide on requests that came due (`ledger_gate`), one decision per request: dispatch
    (the run is now dispatched, its attempt opened), wait for its time, or drop it. The
    outbox holds the requests of lanes that moved on past a paused job's run."""
    params = {
        "requests": as_json(
            [
                {"n": n, "run_id": r.run_id, "attempt": r.attempt, "token": r.token, "lane": r.lane}
                for n, r in enumerate(requests)
            ]
        ),
        "now": now,
        "interval_s": interval_s,
    }
    decisions: list[Dispatch | Wait | Stale | None] = [None] * len(requests)
    moved_on: list[Row[Any]] = []
    for row in await conn.execute(_GATE, params):
        if row.item is None:
            moved_on.append(row)
        elif row.kind == "work":
            work = request_for(row, now).model_copy(update={"event": row.payload})
            decisions[row.item] = Dispatch(work)
        elif row.kind == "wait":
            decisions[row.item] = Wait(row.not_before)
        else:
            decisions[row.item] = Stale(row.note)
    outbox = collect(moved_on, now).outbox
    return [d if d is not None else Stale("not decided") for d in decisions], outbox


async def pause(
    conn: AsyncConnection, job_id: int, *, reason: str, interval_s: float, now: datetime
) -> Outbox:
    """Pause a job (`ledger_pause`); JobNotFound if there is none."""
    params = {"job_id": job_id, "reason": reason, "now": now, "interval_s": interval_s}
    return collect(await conn.execute(_PAUSE, params), now).outbox


async def resume(conn: AsyncConnection, job_id: int, *, interval_s: float, now: datetime) -> Outbox:
    """Resume a paused job (`ledger_resume`); JobNotFound if there is none."""
    params = {"job_id": job_id, "now": now, "interval_s": interval_s}
    return collect(await conn.execute(_RESUME, params), now).outbox


async def _act(
    conn: AsyncConnection, statement: TextualSelect, run_ids: Sequence[int], **params: Any
) -> Acted:
    ids = list(run_ids)
    refused: dict[int, str] = {}
    rows = await conn.execute(statement, {"ids": ids, **params})
    outbox = collect(rows, params["now"], refused=refused).outbox
    return Acted(outbox, {ids[item]: why for item, why in refused.items()})


async def remove_runs(
    conn: AsyncConnection, run_ids: Sequence[int], *, interval_s: float, now: datetime
) -> Acted:
    """Remove queued runs (`ledger_remove`); the others are refused."""
    return await _act(conn, _REMOVE, run_ids, now=now, interval_s=interval_s)


async def execute_failed_runs(
    conn: AsyncConnection, run_ids: Sequence[int], *, now: datetime
) -> Acted:
    """Execute failed runs again (`ledger_execute_failed`); the others are refused."""
    return await _act(conn, _EXECUTE_FAILED, run_ids, now=now)


async def remove(conn: AsyncConnection, run_id: int, *, interval_s: float, now: datetime) -> Outbox:
    """Remove one queued run; RunNotFound or Conflict if it cannot be."""
    params = {"ids": [run_id], "now": now, "interval_s": interval_s}
    return collect(await conn.execute(_REMOVE, params), now).outbox


async def cancel(
    conn: AsyncConnection, run_id: int, *, actor: str, interval_s: float, now: datetime
) -> Outbox:
    """Cancel a run (`ledger_cancel`): a queued one is removed, a dispatched or running one
    ends Failed and the outbox's cancel tells its executor; RunNotFound or Conflict."""
    params = {"run_id": run_id, "actor": actor, "now": now, "interval_s": interval_s}
    return collect(await conn.execute(_CANCEL, params), now).outbox


async def execute_now(conn: AsyncConnection, run_id: int, *, now: datetime) -> Outbox:
    """Run a queued run next (`ledger_execute_now`); RunNotFound or Conflict."""
    return collect(await conn.execute(_EXECUTE_NOW, {"run_id": run_id, "now": now}), now).outbox


async def execute_failed(conn: AsyncConnection, run_id: int, *, now: datetime) -> Outbox:
    """Execute one failed run again; RunNotFound or Conflict."""
    rows = await conn.execute(_EXECUTE_FAILED, {"ids": [run_id], "now": now})
    return collect(rows, now).outbox


async def apply_interval(conn: AsyncConnection, *, interval_s: float, now: datetime) -> Outbox:
    """Reschedule the lanes' waiting heads for a changed interval (`ledger_apply_interval`)."""
    rows = await conn.execute(_APPLY_INTERVAL, {"interval_s": interval_s, "now": now})
    return collect(rows, now).outbox


async def check_lanes(
    conn: AsyncConnection, *, interval_s: float, now: datetime, grace_s: float, limit: int = 500
) -> Outbox:
    """Repair lanes a lost publish stalled (`ledger_check_lanes`)."""
    params = {"now": now, "interval_s": interval_s, "grace_s": grace_s, "limit": limit}
    return collect(await conn.execute(_CHECK_LANES, params), now).outbox


async def unanswered_cancels(
    conn: AsyncConnection, *, now: datetime, quiet_s: float = 5.0, limit: int = 200
) -> Outbox:
    """The cancels to send again (`ledger_unanswered_cancels`): no executor has given its
    account of them `quiet_s` after the cancel."""
    params = {"now": now, "quiet_s": quiet_s, "limit": limit}
    return collect(await conn.execute(_UNANSWERED_CANCELS, params), now).outbox


async def reap(
    conn: AsyncConnection,
    *,
    now: datetime,
    interval_s: float,
    running_grace_s: float,
    dispatch_grace_s: float,
    work_queue_idle: bool,
    limit: int = 200,
) -> Outbox:
    """Fail attempts whose executor was lost and re-send lost work (`ledger_reap`): the
    outbox's work is what is sent again."""
    params = {
        "now": now,
        "interval_s": interval_s,
        "running_grace_s": running_grace_s,
        "dispatch_grace_s": dispatch_grace_s,
        "work_queue_idle": work_queue_idle,
        "limit": limit,
    }
    return collect(await conn.execute(_REAP, params), now).outbox


@dataclass(frozen=True)
class Counts:
    """What the upkeep's gauges show."""

    queued: int
    paused_jobs: int
    held: int


_COUNTS = text(
    "SELECT (SELECT count(*) FROM runs WHERE state = 'queued') AS queued, "
    "(SELECT count(*) FROM jobs WHERE paused) AS paused_jobs, "
    "(SELECT count(*) FROM runs WHERE held_at IS NOT NULL AND state = 'queued') AS held"
)


async def counts(conn: AsyncConnection) -> Counts:
    row = (await conn.execute(_COUNTS)).one()
    return Counts(queued=row.queued, paused_jobs=row.paused_jobs, held=row.held)


async def queued_count(conn: AsyncConnection) -> int:
    """Runs waiting in the queue (the lane backlog)."""
    return (await counts(conn)).queued

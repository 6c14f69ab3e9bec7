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

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, TextualSelect, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.core.messages import (
    Event,
    JobNotice,
    JobRef,
    JobRequest,
    JobResult,
    RunNotice,
    RunStarted,
)
from jobmanager.jobs.spec import PlannedRun
from jobmanager.store.outbox import Outbox


class LedgerError(Exception):
    """An operator action that the run's state does not allow."""


class RunNotFound(LedgerError):
    pass


class Conflict(LedgerError):
    pass


class JobNotFound(LedgerError):
    pass


@dataclass(frozen=True)
class Dispatch:
    """The gate sends this request (with its event) to the executors."""

    request: JobRequest


@dataclass(frozen=True)
class Wait:
    """The request came early; it is due at `until`."""

    until: datetime


@dataclass(frozen=True)
class Stale:
    """The request is no longer wanted (removed, executed, rescheduled, duplicate)."""

    reason: str


@dataclass(frozen=True)
class Lost:
    """The result recorded for an attempt whose executor never reported one: failed for
    good, with `feedback` saying why, its start and executor taken from the run."""

    run_id: int
    attempt: int
    feedback: str


@dataclass
class Changes:
    """What a batch did: its outbox and, per input, whether it changed the ledger (False:
    seen before, or for an attempt that is no longer active)."""

    outbox: Outbox = field(default_factory=Outbox)
    recorded: list[bool] = field(default_factory=list)


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


def notice_for(run: Row[Any], now: datetime) -> RunNotice:
    return RunNotice(
        run_id=run.id,
        state=run.state,
        attempt=run.attempt,
        job=run.job_name,
        lane=run.lane,
        event_id=run.event_id,
        result=run.result,
        feedback=run.feedback,
        at=now,
    )


def _call(function: str) -> TextualSelect:
    # `function` is one of the constants below; no value is formatted into the SQL.
    query = f"SELECT f.kind, f.item, f.note, f.payload, (f.run).* FROM {function} AS f"  # noqa: S608
    return text(query).columns(payload=JSONB)


_ENQUEUE = _call(
    "ledger_enqueue(CAST(:batch AS jsonb), CAST(:planned AS jsonb), :now, :interval_s, :dispatch)"
)
_RECORD = _call(
    "ledger_record(CAST(:started AS jsonb), CAST(:results AS jsonb), :now, :interval_s, :dispatch)"
)
_GATE = _call("ledger_gate(CAST(:requests AS jsonb), :now, :interval_s)")
_PAUSE = _call("ledger_pause(:job_id, :reason, :now, :interval_s)")
_RESUME = _call("ledger_resume(:job_id, :now, :interval_s)")
_REMOVE = _call("ledger_remove(CAST(:ids AS bigint[]), :now, :interval_s)")
_EXECUTE_NOW = _call("ledger_execute_now(:run_id, :now)")
_EXECUTE_FAILED = _call("ledger_execute_failed(CAST(:ids AS bigint[]), :now)")
_APPLY_INTERVAL = _call("ledger_apply_interval(:interval_s, :now)")
_CHECK_LANES = _call("ledger_check_lanes(:now, :interval_s, :grace_s, :limit)")
_REAP = _call(
    "ledger_reap(:now, :interval_s, :running_grace_s, :dispatch_grace_s, :work_queue_idle, :limit)"
)


def _timestamp(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json(value: Any) -> str:
    return json.dumps(value, default=_timestamp)


def _collect(
    rows: Iterable[Row[Any]], now: datetime, inputs: int = 0, refused: dict[int, str] | None = None
) -> Changes:
    """Sort the rows a ledger function returned into a `Changes`. A refused operator action
    raises, unless `refused` collects the refusals (by the input's index)."""
    done = Changes(recorded=[False] * inputs)
    outbox = done.outbox
    for row in rows:
        if row.kind == "recorded":
            done.recorded[row.item] = True
        elif row.kind == "notice":
            outbox.notices.append(notice_for(row, now))
        elif row.kind == "request":
            outbox.requests.append(request_for(row, now))
        elif row.kind == "work":
            outbox.work.append(request_for(row, now).model_copy(update={"event": row.payload}))
        elif row.kind in ("paused", "resumed"):
            outbox.job_notices.append(
                JobNotice(
                    job_id=row.payload["job_id"],
                    job=row.payload["job"],
                    state=row.kind,
                    reason=row.payload["reason"],
                    at=now,
                )
            )
        elif row.kind in ("missing", "conflict") and refused is not None:
            refused[row.item] = row.note
        elif row.kind == "missing":
            raise (JobNotFound if row.note.startswith("job ") else RunNotFound)(row.note)
        elif row.kind == "conflict":
            raise Conflict(row.note)
        else:
            raise ValueError(f"a ledger function returned a row of kind {row.kind!r}")
    return done


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
) -> Changes:
    """Record each new event of the batch and create its runs (`ledger_enqueue`). With
    `dispatch`, the runs due at once are dispatched in the same statement (their work is in
    the outbox) instead of going through the gate."""
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
    params = {
        "batch": _json(events),
        "planned": _json(runs),
        "now": now,
        "interval_s": interval_s,
        "dispatch": dispatch,
    }
    return _collect(await conn.execute(_ENQUEUE, params), now, len(batch))


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
        "started": _json([{"n": n, **s.model_dump(mode="json")} for n, s in enumerate(started)]),
        "results": _json(reports),
        "now": now,
        "interval_s": interval_s,
        "dispatch": dispatch,
    }
    return _collect(await conn.execute(_RECORD, params), now, len(results))


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
        "requests": _json(
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
    outbox = _collect(moved_on, now).outbox
    return [d if d is not None else Stale("not decided") for d in decisions], outbox


async def pause(
    conn: AsyncConnection, job_id: int, *, reason: str, interval_s: float, now: datetime
) -> Outbox:
    """Pause a job (`ledger_pause`); JobNotFound if there is none."""
    params = {"job_id": job_id, "reason": reason, "now": now, "interval_s": interval_s}
    return _collect(await conn.execute(_PAUSE, params), now).outbox


async def resume(conn: AsyncConnection, job_id: int, *, interval_s: float, now: datetime) -> Outbox:
    """Resume a paused job (`ledger_resume`); JobNotFound if there is none."""
    params = {"job_id": job_id, "now": now, "interval_s": interval_s}
    return _collect(await conn.execute(_RESUME, params), now).outbox


@dataclass
class Acted:
    """What an operator action on many runs did: its outbox, and why each run it could not
    act on was refused (by run id)."""

    outbox: Outbox
    refused: dict[int, str]


async def _act(
    conn: AsyncConnection, statement: TextualSelect, run_ids: Sequence[int], **params: Any
) -> Acted:
    ids = list(run_ids)
    refused: dict[int, str] = {}
    rows = await conn.execute(statement, {"ids": ids, **params})
    outbox = _collect(rows, params["now"], refused=refused).outbox
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
    return _collect(await conn.execute(_REMOVE, params), now).outbox


async def execute_now(conn: AsyncConnection, run_id: int, *, now: datetime) -> Outbox:
    """Run a queued run next (`ledger_execute_now`); RunNotFound or Conflict."""
    return _collect(await conn.execute(_EXECUTE_NOW, {"run_id": run_id, "now": now}), now).outbox


async def execute_failed(conn: AsyncConnection, run_id: int, *, now: datetime) -> Outbox:
    """Execute one failed run again; RunNotFound or Conflict."""
    rows = await conn.execute(_EXECUTE_FAILED, {"ids": [run_id], "now": now})
    return _collect(rows, now).outbox


async def apply_interval(conn: AsyncConnection, *, interval_s: float, now: datetime) -> Outbox:
    """Reschedule the lanes' waiting heads for a changed interval (`ledger_apply_interval`)."""
    rows = await conn.execute(_APPLY_INTERVAL, {"interval_s": interval_s, "now": now})
    return _collect(rows, now).outbox


async def check_lanes(
    conn: AsyncConnection, *, interval_s: float, now: datetime, grace_s: float, limit: int = 500
) -> Outbox:
    """Repair lanes a lost publish stalled (`ledger_check_lanes`)."""
    params = {"now": now, "interval_s": interval_s, "grace_s": grace_s, "limit": limit}
    return _collect(await conn.execute(_CHECK_LANES, params), now).outbox


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
    return _collect(await conn.execute(_REAP, params), now).outbox


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

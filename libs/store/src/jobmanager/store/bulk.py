"""The ledger's hot transitions for many messages at once.

At saturation a consumer holds dozens of messages. Applied one transaction each, a run costs
about twenty statements and three commits. Here a whole batch of events, or of executor
reports, is one call of a database function (`ledger_enqueue`, `ledger_record`, defined in
migration 0003): one statement, so one round trip, and in an autocommit connection
(`db.transaction(..., single_statement=True)`) its own transaction. At half of the peak load
a batch holds a few messages, and the round trips, not the rows, are what its transaction
takes: each waits for two busy processes to be scheduled. The functions keep every rule of
`jobmanager.store.ledger`, which stays the reference (its tests are the specification) and
the path for single messages, operator actions and upkeep.

Lock order, as everywhere in the ledger: lane rows first, in name order (byte order, which
is Python's `sorted` and Postgres's "C" collation), then run rows in id order. A batch
therefore cannot deadlock with another batch or with a single transition. Queued runs of a
lane are only ever changed by whoever holds the lane's lock, so picking a lane's next head
needs no lock of its own.
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

from jobmanager.core.messages import Event, JobRequest, JobResult, RunStarted
from jobmanager.store import lanes
from jobmanager.store.ledger import Dispatch, PlannedRun, Stale, Wait, planned_values
from jobmanager.store.outbox import Outbox


# The database functions of migration 0003 (`ledger_enqueue`, `ledger_record`,
# `ledger_dispatch`) return what a transition has to publish, one row per item: its `kind`,
# the `item` (the index of an input that was recorded) and the run's row with its event's
# payload (for work).
def _rows_of(call: str) -> TextualSelect:
    # `call` is one of the constants below; no value is formatted into the SQL.
    query = f"SELECT f.kind, f.item, (f.run).*, f.payload FROM {call} AS f"  # noqa: S608
    return text(query).columns(payload=JSONB)


_ENQUEUE = _rows_of(
    "ledger_enqueue(CAST(:batch AS jsonb), CAST(:planned AS jsonb), :now, :interval_s, :dispatch)"
)
_RECORD = _rows_of(
    "ledger_record(CAST(:started AS jsonb), CAST(:results AS jsonb), :now, :interval_s, :dispatch)"
)
_DISPATCH = _rows_of("ledger_dispatch(CAST(:ids AS bigint[]), :now)")
_LOCK_LANES = text(
    'SELECT * FROM lanes WHERE name = ANY(CAST(:names AS text[])) ORDER BY name COLLATE "C" '
    "FOR UPDATE"
)
_LOCK_RUNS = text(
    "SELECT * FROM runs WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE"
)


def _timestamp(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json(value: Any) -> str:
    return json.dumps(value, default=_timestamp)


def _collect(rows: Iterable[Row[Any]], outbox: Outbox, recorded: list[bool], now: datetime) -> None:
    """Sort the rows a ledger function returned into the outbox and the recorded flags."""
    for row in rows:
        if row.kind == "recorded":
            recorded[row.item] = True
        elif row.kind == "notice":
            outbox.notices.append(lanes.notice_for(row, row.state, now))
        elif row.kind == "request":
            outbox.requests.append(lanes.request_for(row, now))
        elif row.kind == "work":  # dispatched, with its event
            outbox.work.append(
                lanes.request_for(row, now).model_copy(update={"event": row.payload})
            )
        else:
            raise ValueError(f"a ledger function returned a row of kind {row.kind!r}")


@dataclass
class Enqueued:
    """What `enqueue_many` did: the outbox of the whole batch and, per event, whether it was
    recorded now (False: seen before, so it created nothing)."""

    outbox: Outbox = field(default_factory=Outbox)
    recorded: list[bool] = field(default_factory=list)


@dataclass
class Recorded:
    """What `record_results` did: the outbox of the whole batch and, per result, whether it
    changed its run (False: a duplicate, or for an attempt that is no longer active)."""

    outbox: Outbox = field(default_factory=Outbox)
    recorded: list[bool] = field(default_factory=list)


# -- the lifecycle ---------------------------------------------------------------------------


async def enqueue_many(
    conn: AsyncConnection,
    batch: Sequence[tuple[Event, list[PlannedRun]]],
    *,
    interval_s: float,
    now: datetime,
    dispatch: bool = False,
) -> Enqueued:
    """`ledger.enqueue` for a batch of events: record each new one and create its runs.
    With `dispatch`, the runs due at once are dispatched too (see `dispatch_due`)."""
    done = Enqueued(recorded=[False] * len(batch))
    if not batch:
        return done
    events = [
        {
            "i": i,
            "source": event.source,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "occurred_at": event.occurred_at,
            "payload": event.document(),
            "matched": len(planned),
        }
        for i, (event, planned) in enumerate(batch)
    ]
    runs = [
        {"i": i, **planned_values(p, event, now)}
        for i, (event, planned) in enumerate(batch)
        for p in planned
    ]
    for n, values in enumerate(runs):  # the order of creation
        values["n"] = n
    params = {
        "batch": _json(events),
        "planned": _json(runs),
        "now": now,
        "interval_s": interval_s,
        "dispatch": dispatch,
    }
    _collect(await conn.execute(_ENQUEUE, params), done.outbox, done.recorded, now)
    return done


async def gate_many(
    conn: AsyncConnection, requests: Sequence[JobRequest], *, now: datetime
) -> list[Dispatch | Wait | Stale]:
    """`ledger.gate` for a batch of due requests, one decision per request."""
    locked_lanes = await _lock_lanes(conn, (r.lane for r in requests))
    locked = await _lock_runs(conn, (r.run_id for r in requests))
    decisions: list[Dispatch | Wait | Stale | None] = []
    chosen: dict[int, int] = {}  # run id -> index of the request that dispatches it
    for i, request in enumerate(requests):
        run = locked.get(request.run_id)
        lane = locked_lanes.get(request.lane) if request.lane is not None else None
        if run is None:
            decisions.append(Stale("the run no longer exists"))
        elif run.id in chosen:
            decisions.append(Stale("the run is dispatched"))
        elif run.state != "queued":
            decisions.append(Stale(f"the run is {run.state}"))
        elif (run.attempt, run.token) != (request.attempt, request.token):
            decisions.append(Stale("the run was rescheduled"))
        elif request.lane is not None and (lane is None or lane.head_run_id != run.id):
            decisions.append(Stale("the run is not its lane's head"))
        elif run.not_before is not None and run.not_before > now:
            decisions.append(Wait(run.not_before))
        else:
            chosen[run.id] = i
            decisions.append(None)  # decided below, with the dispatched row
    if chosen:
        for request in await _dispatch(conn, chosen, now):
            decisions[chosen[request.run_id]] = Dispatch(request)
    return [d for d in decisions if d is not None]


async def _lock_lanes(conn: AsyncConnection, names: Iterable[str | None]) -> dict[str, Row[Any]]:
    wanted = sorted({n for n in names if n is not None})
    if not wanted:
        return {}
    return {row.name: row for row in await conn.execute(_LOCK_LANES, {"names": wanted})}


async def _lock_runs(conn: AsyncConnection, ids: Iterable[int]) -> dict[int, Row[Any]]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {row.id: row for row in await conn.execute(_LOCK_RUNS, {"ids": wanted})}


async def _dispatch(conn: AsyncConnection, ids: Iterable[int], now: datetime) -> list[JobRequest]:
    """Mark these runs dispatched and open their attempts: their work requests (with the
    event attached), in id order."""
    outbox = Outbox()
    _collect(await conn.execute(_DISPATCH, {"ids": sorted(ids), "now": now}), outbox, [], now)
    return outbox.work


async def dispatch_due(conn: AsyncConnection, outbox: Outbox, *, now: datetime) -> None:
    """Dispatch the outbox's requests that are due now in the caller's transaction, instead
    of sending them to the gate: they move from `outbox.requests` to `outbox.work`.

    Only for the outbox of a transition that scheduled those runs in this transaction
    (enqueue, a result), which therefore holds their lanes' and their rows' locks and knows
    them to be their lanes' heads with the current token: the gate's checks hold by
    construction. The runs skip a queue hop and the gate's transaction. Should the process
    die between the commit and the publish, the reaper re-sends the work after
    `JOBMANAGER_DISPATCH_GRACE_S`, as for a dispatch of the gate.
    """
    due = {r.run_id for r in outbox.requests if r.not_before <= now}
    if not due:
        return
    outbox.work += await _dispatch(conn, due, now)
    outbox.requests = [r for r in outbox.requests if r.run_id not in due]


async def record_started_many(
    conn: AsyncConnection, started: Sequence[RunStarted], *, now: datetime
) -> Outbox:
    """`ledger.record_started` for a batch: dispatched runs become running."""
    return (await record_reports(conn, started, [], interval_s=0.0, now=now)).outbox


async def record_results(
    conn: AsyncConnection,
    results: Sequence[JobResult],
    *,
    interval_s: float,
    now: datetime,
    dispatch: bool = False,
) -> Recorded:
    """`ledger.record_result` for a batch: record each attempt's result, retry or end its
    run, and move the lanes whose run ended on to their next run."""
    return await record_reports(
        conn, [], results, interval_s=interval_s, now=now, dispatch=dispatch
    )


async def record_reports(
    conn: AsyncConnection,
    started: Sequence[RunStarted],
    results: Sequence[JobResult],
    *,
    interval_s: float,
    now: datetime,
    dispatch: bool = False,
) -> Recorded:
    """What executors reported, in one statement: the starts, then the results (`recorded`
    is per result). The lanes and runs of both are locked first, together. With
    `dispatch`, the lanes' next runs due at once and the retries due at once are dispatched
    too (see `dispatch_due`)."""
    done = Recorded(recorded=[False] * len(results))
    if not (started or results):
        return done
    params = {
        "started": _json([{"n": n, **s.model_dump(mode="json")} for n, s in enumerate(started)]),
        "results": _json([{"n": n, **r.model_dump(mode="json")} for n, r in enumerate(results)]),
        "now": now,
        "interval_s": interval_s,
        "dispatch": dispatch,
    }
    _collect(await conn.execute(_RECORD, params), done.outbox, done.recorded, now)
    return done

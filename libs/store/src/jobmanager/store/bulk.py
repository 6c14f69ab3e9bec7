"""The ledger's hot transitions for many messages at once.

At saturation a consumer holds dozens of messages. Applied one transaction each, a run costs
about twenty statements and three commits; these functions apply a whole batch in one
transaction with a fixed number of set-based statements. They keep every rule of
`jobmanager.store.ledger`, which stays the reference (its tests are the specification) and
the path for single messages, operator actions and upkeep.

Lock order, as everywhere in the ledger: lane rows first, in name order (byte order, which
is Python's `sorted`), then run rows in id order. A batch therefore cannot deadlock with
another batch or with a single transition. Queued runs of a lane are only ever changed by
whoever holds the lane's lock, so picking a lane's next head needs no lock of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import BigInteger, Row, Table, text
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.core.messages import Event, JobRequest, JobResult, RunNotice, RunStarted
from jobmanager.store import lanes
from jobmanager.store.ledger import Dispatch, PlannedRun, Stale, Wait, insert_runs, run_values
from jobmanager.store.models import ACTIVE_STATES, Attempt, Run
from jobmanager.store.models import Event as EventRow
from jobmanager.store.outbox import Outbox

runs = cast(Table, Run.__table__)
attempts = cast(Table, Attempt.__table__)

# Creates the missing lanes and locks them all, in the lock order, in one statement (locking
# the existing ones first and creating the rest after would take new lanes out of order).
# The no-op update is what locks an existing row.
_ENSURE_AND_LOCK_LANES = text(
    """
    INSERT INTO lanes (name)
    SELECT n FROM unnest(CAST(:names AS text[])) AS n ORDER BY n COLLATE "C"
    ON CONFLICT (name) DO UPDATE SET name = excluded.name
    RETURNING *
    """
)
_LOCK_LANES = text(
    'SELECT * FROM lanes WHERE name = ANY(CAST(:names AS text[])) ORDER BY name COLLATE "C" '
    "FOR UPDATE"
)
# The lanes of these runs, locked in the lock order (a run's lane never changes, so it is
# read without locking the run).
_LOCK_LANES_OF_RUNS = text(
    """
    SELECT * FROM lanes
    WHERE name IN (SELECT lane FROM runs WHERE id = ANY(CAST(:ids AS bigint[])))
    ORDER BY name COLLATE "C" FOR UPDATE
    """
)
_LOCK_RUNS = text(
    "SELECT * FROM runs WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE"
)
# `lanes.advance` for many locked lanes in one statement: each lane's next queued run (an
# Execute Now first, then enqueue order) becomes its head, with a new token, due at the
# lane's slot (at once for an Execute Now); a lane with nothing queued becomes idle. With
# `dispatch`, a new head due now is dispatched as well (`dispatch_due`, in the same
# statement): its attempt is opened and its event returned for the work request.
_ADVANCE = text(
    """
    WITH nxt AS (
        SELECT l.name, n.id,
               CASE WHEN n.execute_now_at IS NOT NULL
                    THEN CAST(:now AS timestamptz) ELSE l.slot END AS due
        FROM unnest(CAST(:names AS text[]), CAST(:slots AS timestamptz[])) AS l(name, slot)
        LEFT JOIN LATERAL (
            SELECT r.id, r.execute_now_at FROM runs r
            WHERE r.lane = l.name AND r.state = 'queued'
            ORDER BY r.execute_now_at ASC NULLS LAST, r.id
            LIMIT 1
        ) AS n ON true
    ), heads AS (
        UPDATE lanes SET head_run_id = nxt.id FROM nxt WHERE lanes.name = nxt.name
    ), moved AS (
        UPDATE runs SET
            token = runs.token + 1,
            not_before = nxt.due,
            state = CASE WHEN :dispatch AND nxt.due <= :now THEN 'dispatched' ELSE runs.state END,
            dispatched_at = CASE WHEN :dispatch AND nxt.due <= :now
                                 THEN CAST(:now AS timestamptz) ELSE runs.dispatched_at END
        FROM nxt
        WHERE runs.id = nxt.id
        RETURNING runs.*
    ), opened AS (
        INSERT INTO attempts (run_id, attempt, dispatched_at)
        SELECT id, attempt, dispatched_at FROM moved WHERE state = 'dispatched'
        ON CONFLICT (run_id, attempt) DO UPDATE SET dispatched_at = excluded.dispatched_at
    )
    SELECT moved.*, CASE WHEN moved.state = 'dispatched' THEN e.payload END AS payload
    FROM moved LEFT JOIN events e ON e.id = moved.event_pk
    """
).columns(payload=JSONB)
_DISPATCH = text(
    """
    UPDATE runs SET state = 'dispatched', dispatched_at = :now
    WHERE id = ANY(CAST(:ids AS bigint[]))
    RETURNING *
    """
)
_OPEN_ATTEMPTS = text(
    """
    INSERT INTO attempts (run_id, attempt, dispatched_at)
    SELECT v.run_id, v.attempt, :now
    FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS int[])) AS v(run_id, attempt)
    ON CONFLICT (run_id, attempt) DO UPDATE SET dispatched_at = excluded.dispatched_at
    """
)
_PAYLOADS = text("SELECT id, payload FROM events WHERE id = ANY(CAST(:ids AS bigint[]))").columns(
    id=BigInteger, payload=JSONB
)
_STARTED = text(
    """
    UPDATE runs SET state = 'running', started_at = v.started_at, executor = v.executor
    FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS int[]),
                CAST(:started AS timestamptz[]), CAST(:executors AS text[]))
         AS v(id, attempt, started_at, executor)
    WHERE runs.id = v.id AND runs.attempt = v.attempt AND runs.state = 'dispatched'
    RETURNING runs.*
    """
)
_STARTED_ATTEMPTS = text(
    """
    UPDATE attempts SET started_at = v.started_at, executor = v.executor
    FROM unnest(CAST(:ids AS bigint[]), CAST(:attempts AS int[]),
                CAST(:started AS timestamptz[]), CAST(:executors AS text[]))
         AS v(run_id, attempt, started_at, executor)
    WHERE attempts.run_id = v.run_id AND attempts.attempt = v.attempt
    """
)
# One row per recorded result: `retry` keeps the run queued as its lane's head for a new
# attempt; otherwise the run ends (`state` is succeeded or failed).
_RESULT_COLUMNS = """
    unnest(CAST(:ids AS bigint[]), CAST(:attempts AS int[]), CAST(:retry AS boolean[]),
           CAST(:states AS text[]), CAST(:not_before AS timestamptz[]),
           CAST(:started AS timestamptz[]), CAST(:finished AS timestamptz[]),
           CAST(:results AS smallint[]), CAST(:feedback AS text[]),
           CAST(:executors AS text[]), CAST(:tails AS text[]))
    AS v(id, attempt, retry, state, not_before, started_at, finished_at, result, feedback,
         executor, output_tail)
"""
# The attempts, the runs and their lanes' last finish, in one statement (the f-string joins
# constant SQL; no value is formatted into it).
_RESULTS = text(
    f"""
    WITH v AS (SELECT * FROM {_RESULT_COLUMNS}), tried AS (
        UPDATE attempts SET
            started_at = coalesce(attempts.started_at, v.started_at),
            finished_at = v.finished_at, result = v.result, feedback = v.feedback,
            executor = v.executor, output_tail = v.output_tail
        FROM v
        WHERE attempts.run_id = v.id AND attempts.attempt = v.attempt
    ), finished AS (
        UPDATE lanes SET last_finished_at = f.at
        FROM unnest(CAST(:lanes AS text[]), CAST(:lanes_at AS timestamptz[])) AS f(name, at)
        WHERE lanes.name = f.name
    )
    UPDATE runs SET
        state = v.state,
        attempt = CASE WHEN v.retry THEN runs.attempt + 1 ELSE runs.attempt END,
        token = CASE WHEN v.retry THEN runs.token + 1 ELSE runs.token END,
        not_before = CASE WHEN v.retry THEN v.not_before ELSE runs.not_before END,
        execute_now_at = CASE WHEN v.retry THEN NULL ELSE runs.execute_now_at END,
        dispatched_at = CASE WHEN v.retry THEN NULL ELSE runs.dispatched_at END,
        finished_at = CASE WHEN v.retry THEN runs.finished_at ELSE v.finished_at END,
        started_at = coalesce(runs.started_at, v.started_at),
        result = v.result, feedback = v.feedback, executor = v.executor,
        output_tail = v.output_tail
    FROM v
    WHERE runs.id = v.id
    RETURNING runs.*
    """  # noqa: S608
)


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


# -- locking and lanes -----------------------------------------------------------------------


async def _lock_lanes(
    conn: AsyncConnection, names: Iterable[str | None], *, create: bool = False
) -> dict[str, Row[Any]]:
    wanted = sorted({n for n in names if n is not None})
    if not wanted:
        return {}
    locking = _ENSURE_AND_LOCK_LANES if create else _LOCK_LANES
    return {row.name: row for row in await conn.execute(locking, {"names": wanted})}


async def _lock_runs(conn: AsyncConnection, ids: Iterable[int]) -> dict[int, Row[Any]]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return {row.id: row for row in await conn.execute(_LOCK_RUNS, {"ids": wanted})}


async def _advance(
    conn: AsyncConnection, slots: dict[str, datetime], now: datetime, *, dispatch: bool
) -> Outbox:
    """`lanes.advance` for many locked lanes (see `_ADVANCE`); with `dispatch`, the new heads
    due now are dispatched at once, as `dispatch_due` would."""
    outbox = Outbox()
    if not slots:
        return outbox
    names = sorted(slots)
    params = {"names": names, "slots": [slots[n] for n in names], "now": now, "dispatch": dispatch}
    for run in await conn.execute(_ADVANCE, params):
        if run.state == "dispatched":
            outbox.work.append(
                lanes.request_for(run, now).model_copy(update={"event": run.payload})
            )
        else:
            outbox.requests.append(lanes.request_for(run, now))
    return outbox


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
    inserted = await conn.execute(
        insert(EventRow)
        .on_conflict_do_nothing(index_elements=["source", "event_id"])
        .returning(EventRow.id, EventRow.source, EventRow.event_id),
        [
            {
                "source": event.source,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "occurred_at": event.occurred_at,
                "received_at": now,
                "payload": event.document(),
                "matched": len(planned),
            }
            # In key order: two batches inserting the same events wait for each other in
            # the unique index in one order, so they cannot deadlock there.
            for event, planned in sorted(batch, key=lambda item: (item[0].source, item[0].event_id))
        ],
    )
    pks = {(row.source, row.event_id): row.id for row in inserted}
    values: list[dict[str, Any]] = []
    for i, (event, planned) in enumerate(batch):
        # The same event twice in one batch: the first copy is the one recorded.
        pk = pks.pop((event.source, event.event_id), None)
        if pk is None:
            continue
        done.recorded[i] = True
        values += [run_values(p, event, pk, now) for p in planned]
    if not values:
        return done
    # Lanes first, then the runs: ids handed out under the lane locks keep each lane's
    # enqueue order equal to its commit order.
    locked = await _lock_lanes(
        conn, (v["lane"] for v in values if v["state"] == "queued"), create=True
    )
    created = await insert_runs(conn, values, now)
    outbox = done.outbox
    for run in created:
        outbox.notices.append(lanes.notice_for(run, run.state, now))
        if run.state == "queued" and run.lane is None:
            outbox.requests.append(lanes.request_for(run, now))
    idle = {
        name: lanes.lane_slot(lane, interval_s, now)
        for name, lane in locked.items()
        if lane.head_run_id is None
    }
    outbox.extend(await _advance(conn, idle, now, dispatch=dispatch))
    if dispatch:
        await dispatch_due(conn, outbox, now=now)  # the runs without a lane
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
        for i, request in await _dispatch(conn, chosen, now):
            decisions[i] = Dispatch(request)
    return [d for d in decisions if d is not None]


async def _dispatch(
    conn: AsyncConnection, chosen: dict[int, int], now: datetime
) -> list[tuple[int, JobRequest]]:
    """Mark the chosen runs dispatched, open their attempts, and build their work requests
    (with the event attached): (index of the request, work request) pairs."""
    ids = sorted(chosen)
    dispatched = {r.id: r for r in await conn.execute(_DISPATCH, {"ids": ids, "now": now})}
    await conn.execute(
        _OPEN_ATTEMPTS, {"ids": ids, "attempts": [dispatched[i].attempt for i in ids], "now": now}
    )
    event_pks = sorted({r.event_pk for r in dispatched.values() if r.event_pk is not None})
    payloads: dict[int, Any] = {}
    if event_pks:
        payloads = {r.id: r.payload for r in await conn.execute(_PAYLOADS, {"ids": event_pks})}
    return [
        (
            i,
            lanes.request_for(dispatched[run_id], now).model_copy(
                update={"event": payloads.get(dispatched[run_id].event_pk)}
            ),
        )
        for run_id, i in chosen.items()
    ]


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
    # Run id -> index of its request (a transition schedules each run once).
    due = {r.run_id: i for i, r in enumerate(outbox.requests) if r.not_before <= now}
    if not due:
        return
    outbox.work += [request for _, request in sorted(await _dispatch(conn, due, now))]
    sent = set(due.values())
    outbox.requests = [r for i, r in enumerate(outbox.requests) if i not in sent]


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
    """What executors reported, in one transaction: the starts, then the results
    (`recorded` is per result). The lanes and runs of both are locked first, together.
    With `dispatch`, the lanes' next runs due at once and the retries due at once are
    dispatched too (see `dispatch_due`)."""
    done = Recorded(recorded=[False] * len(results))
    ids = sorted({s.run_id for s in started} | {r.run_id for r in results})
    if not ids:
        return done
    locked_lanes = {r.name: r for r in await conn.execute(_LOCK_LANES_OF_RUNS, {"ids": ids})}
    locked = await _lock_runs(conn, ids)
    done.outbox.notices += await _apply_started(conn, started, locked, now)
    await _apply_results(conn, results, locked, locked_lanes, done, interval_s, now, dispatch)
    if dispatch:
        await dispatch_due(conn, done.outbox, now=now)  # the retries
    return done


async def _apply_started(
    conn: AsyncConnection,
    started: Sequence[RunStarted],
    locked: dict[int, Row[Any]],
    now: datetime,
) -> list[RunNotice]:
    """Dispatched runs whose start is reported become running; the first report of an
    attempt counts, a repeat or a late one changes nothing."""
    first: dict[int, RunStarted] = {}
    for report in started:
        run = locked.get(report.run_id)
        if run is not None and run.state == "dispatched" and run.attempt == report.attempt:
            first.setdefault(run.id, report)
    if not first:
        return []
    params = {
        "ids": list(first),
        "attempts": [s.attempt for s in first.values()],
        "started": [s.started_at for s in first.values()],
        "executors": [s.executor for s in first.values()],
    }
    changed = (await conn.execute(_STARTED, params)).all()
    await conn.execute(_STARTED_ATTEMPTS, params)
    for run in changed:  # what the results below see of these runs
        locked[run.id] = run
    return [lanes.notice_for(run, "running", now) for run in changed]


async def _apply_results(
    conn: AsyncConnection,
    results: Sequence[JobResult],
    locked: dict[int, Row[Any]],
    locked_lanes: dict[str, Row[Any]],
    done: Recorded,
    interval_s: float,
    now: datetime,
    dispatch: bool,
) -> None:
    """Record the results of the runs' active attempts (the first of duplicates), retry or
    end the runs, and move the lanes whose run ended on; into `done`."""
    rows: list[dict[str, Any]] = []
    taken: set[int] = set()
    for i, result in enumerate(results):
        run = locked.get(result.run_id)
        if (
            run is None
            or run.id in taken
            or run.attempt != result.attempt
            or run.state not in ACTIVE_STATES
        ):
            continue
        taken.add(run.id)
        done.recorded[i] = True
        finished = min(result.finished_at, now)
        retry = result.result == 2 and run.attempt < run.max_attempts
        wait = max(run.retry_backoff_s, interval_s if run.lane is not None else 0.0)
        rows.append(
            {
                "id": run.id,
                "attempt": run.attempt,
                "retry": retry,
                "state": "queued" if retry else ("succeeded" if result.result == 3 else "failed"),
                "not_before": finished + timedelta(seconds=wait) if retry else None,
                "started": result.started_at,
                "finished": finished,
                "result": result.result,
                "feedback": result.feedback,
                "executor": result.executor,
                "tail": result.output_tail,
            }
        )
    if not rows:
        return
    params = {
        "ids": [r["id"] for r in rows],
        "attempts": [r["attempt"] for r in rows],
        "retry": [r["retry"] for r in rows],
        "states": [r["state"] for r in rows],
        "not_before": [r["not_before"] for r in rows],
        "started": [r["started"] for r in rows],
        "finished": [r["finished"] for r in rows],
        "results": [r["result"] for r in rows],
        "feedback": [r["feedback"] for r in rows],
        "executors": [r["executor"] for r in rows],
        "tails": [r["tail"] for r in rows],
    }
    # A lane has one active run, so at most one recorded result per lane.
    finished_in: dict[str, datetime] = {}
    slots: dict[str, datetime] = {}
    for r in rows:
        lane = locked[r["id"]].lane
        if lane is not None and lane in locked_lanes:
            finished_in[lane] = r["finished"]
            if not r["retry"]:
                slots[lane] = max(r["finished"] + timedelta(seconds=interval_s), now)
    params["lanes"] = sorted(finished_in)
    params["lanes_at"] = [finished_in[n] for n in params["lanes"]]
    outbox = done.outbox
    retried = {r["id"] for r in rows if r["retry"]}
    for run in await conn.execute(_RESULTS, params):
        outbox.notices.append(lanes.notice_for(run, run.state, now))
        if run.id in retried:
            outbox.requests.append(lanes.request_for(run, now))
    outbox.extend(await _advance(conn, slots, now, dispatch=dispatch))

"""The ledger's rules for batches of messages, against the real Postgres.

A single message is a batch of one, so these are the rules of every path. Besides the
examples, seeded random workloads (events, early and duplicated requests, lost and repeated
reports, operator actions) check the rules after every step: a lane's runs in order, never
two active runs of a lane, the interval kept, a stale token never dispatched, every run
reaching its end; and concurrent batches, operator actions and upkeep over shared lanes keep
the lanes consistent without deadlocking. Each test gets its own cloned database.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

import pytest
from ledger_kit import T0, T, at, event, plan, tx
from sqlalchemy import Select, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from jobmanager.core.messages import Event, JobRequest, JobResult, RunStarted
from jobmanager.jobs.spec import PlannedRun
from jobmanager.store import ledger
from jobmanager.store.db import create_engine
from jobmanager.store.ledger import Changes, Dispatch, Stale, Wait
from jobmanager.store.models import Attempt, Lane, Run
from jobmanager.store.models import Event as EventRow
from jobmanager.store.outbox import Outbox
from jobmanager.testkit import databases


def started(request: JobRequest, *, at_: datetime, executor: str = "x1") -> RunStarted:
    return RunStarted(
        run_id=request.run_id, attempt=request.attempt, executor=executor, started_at=at_
    )


def result(
    request: JobRequest,
    code: Literal[2, 3],
    *,
    at_: datetime,
    feedback: str = "",
    attempt: int | None = None,
    executor: str = "x1",
) -> JobResult:
    return JobResult(
        run_id=request.run_id,
        attempt=attempt or request.attempt,
        result=code,
        status="succeeded" if code == 3 else "failed",
        feedback=feedback,
        started_at=at_,
        finished_at=at_,
        executor=executor,
        output_tail=f"tail of {request.run_id}/{attempt or request.attempt}",
    )


# -- the ledger's calls, one transaction each -----------------------------------------------


async def enqueue_many(
    engine: AsyncEngine,
    batch: Sequence[tuple[Event, list[PlannedRun]]],
    *,
    now: datetime = T0,
    interval_s: float = 0.0,
) -> Changes:
    return await tx(engine, lambda c: ledger.enqueue(c, batch, interval_s=interval_s, now=now))


async def gate_many(
    engine: AsyncEngine, requests: Sequence[JobRequest], now: datetime
) -> list[Dispatch | Wait | Stale]:
    decisions, _ = await tx(engine, lambda c: ledger.gate(c, requests, now=now, interval_s=0))
    return decisions


async def dispatch_all(
    engine: AsyncEngine, requests: Sequence[JobRequest], now: datetime
) -> list[JobRequest]:
    decisions = await gate_many(engine, requests, now)
    assert all(isinstance(d, Dispatch) for d in decisions), decisions
    return [d.request for d in decisions if isinstance(d, Dispatch)]


async def start_many(
    engine: AsyncEngine, reports: Sequence[RunStarted], now: datetime
) -> list[int]:
    """The runs the reports moved to running (from the notices)."""
    done = await tx(engine, lambda c: ledger.record(c, reports, [], interval_s=0, now=now))
    return [n.run_id for n in done.outbox.notices]


async def record_results(
    engine: AsyncEngine, results: Sequence[JobResult], now: datetime, *, interval_s: float = 0.0
) -> Changes:
    return await tx(engine, lambda c: ledger.record(c, [], results, interval_s=interval_s, now=now))


# -- reading the database ---------------------------------------------------------------------


async def run_row(engine: AsyncEngine, run_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(Run.__table__).where(Run.id == run_id))).one()


async def lane_row(engine: AsyncEngine, name: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(Lane.__table__).where(Lane.name == name))).one_or_none()


async def attempt_rows(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    select(Attempt.__table__).order_by(Attempt.run_id, Attempt.attempt)
                )
            ).all()
        )


async def snapshot(engine: AsyncEngine) -> dict[str, Any]:
    """Everything the ledger writes, keyed so that two databases compare: runs by id (their
    `event_pk` aside: a duplicate event uses up a sequence value), lanes by name, attempts by
    (run, attempt), events by event id."""
    async with engine.connect() as conn:
        run_rows = (await conn.execute(select(Run.__table__).order_by(Run.id))).all()
        lanes = (await conn.execute(select(Lane.__table__).order_by(Lane.name))).all()
        tries = (await conn.execute(select(Attempt.__table__))).all()
        events = (await conn.execute(select(EventRow.__table__))).all()
    return {
        "runs": {r.id: {k: v for k, v in r._asdict().items() if k != "event_pk"} for r in run_rows},
        "lanes": {r.name: r._asdict() for r in lanes},
        "attempts": {(r.run_id, r.attempt): r._asdict() for r in tries},
        "events": {r.event_id: {k: v for k, v in r._asdict().items() if k != "id"} for r in events},
    }


# -- enqueue_many -----------------------------------------------------------------------------


async def test_a_batch_schedules_one_head_per_lane_and_the_rest_wait(engine: AsyncEngine) -> None:
    done = await enqueue_many(
        engine,
        [
            (event(), [plan("a"), plan("b")]),
            (event(), [plan("a"), plan("c")]),
            (event(), [plan("b")]),
        ],
    )
    assert done.recorded == [True, True, True]
    assert len(done.outbox.notices) == 5
    assert {n.state for n in done.outbox.notices} == {"queued"}
    # Runs are created in batch order.
    first = min(n.run_id for n in done.outbox.notices)
    a1, b1, a2, c1, b2 = range(first, first + 5)
    assert {n.run_id: n.lane for n in done.outbox.notices} == {
        a1: "a",
        b1: "b",
        a2: "a",
        c1: "c",
        b2: "b",
    }
    heads = {r.lane: r for r in done.outbox.requests}
    assert len(done.outbox.requests) == 3, "only the heads go to the broker"
    assert {lane: r.run_id for lane, r in heads.items()} == {"a": a1, "b": b1, "c": c1}
    assert all((r.token, r.attempt, r.not_before) == (1, 1, T0) for r in heads.values())
    for name, head in (("a", a1), ("b", b1), ("c", c1)):
        assert (await lane_row(engine, name)).head_run_id == head
    for waiting in (a2, b2):
        row = await run_row(engine, waiting)
        assert (row.state, row.token, row.not_before) == ("queued", 0, None), "not scheduled"


async def test_an_event_twice_in_one_batch_is_recorded_once(engine: AsyncEngine) -> None:
    ev = event()
    done = await enqueue_many(engine, [(ev, [plan()]), (ev, [plan(), plan()])])
    assert done.recorded == [True, False]
    assert len(done.outbox.notices) == 1, "the first copy's runs only"
    snap = await snapshot(engine)
    assert len(snap["runs"]) == 1 and list(snap["events"]) == [ev.event_id]


async def test_an_event_recorded_earlier_is_a_duplicate(engine: AsyncEngine) -> None:
    old, new = event(), event()
    assert await tx(engine, lambda c: ledger.enqueue(c, [(old, [plan()])], interval_s=0, now=T0))
    done = await enqueue_many(engine, [(old, [plan()]), (new, [plan()])], now=at(1))
    assert done.recorded == [False, True]
    assert [n.event_id for n in done.outbox.notices] == [new.event_id]
    assert done.outbox.requests == [], "the lane already has its head"
    async with engine.connect() as conn:
        assert len((await conn.execute(select(Run.id))).all()) == 2


async def test_an_event_with_no_runs_is_still_recorded(engine: AsyncEngine) -> None:
    ev = event()
    done = await enqueue_many(engine, [(ev, [])])
    assert done.recorded == [True] and done.outbox.notices == []
    assert (await enqueue_many(engine, [(ev, [plan()])])).recorded == [False]


async def test_a_run_that_cannot_be_prepared_is_failed_with_its_attempt(
    engine: AsyncEngine,
) -> None:
    done = await enqueue_many(
        engine,
        [
            (
                event(),
                [plan("a", error="template: 'x' is undefined"), plan("a"), plan("z", error="e")],
            )
        ],
        now=at(5),
    )
    assert sorted(n.state for n in done.outbox.notices) == ["failed", "failed", "queued"]
    [head] = done.outbox.requests
    bad = head.run_id - 1
    row = await run_row(engine, bad)
    assert (row.state, row.result, row.finished_at) == ("failed", 2, at(5))
    assert "undefined" in row.feedback and row.token == 0
    attempts = {(a.run_id, a.attempt): a for a in await attempt_rows(engine)}
    assert set(attempts) == {(bad, 1), (bad + 2, 1)}
    assert (attempts[bad, 1].result, attempts[bad, 1].finished_at) == (2, at(5))
    assert attempts[bad, 1].feedback == row.feedback
    assert (await lane_row(engine, "a")).head_run_id == head.run_id, "the failed run never heads"
    assert await lane_row(engine, "z") is None, "as in the ledger: no lane for a failed run"


async def test_runs_without_a_lane_are_requested_at_once(engine: AsyncEngine) -> None:
    done = await enqueue_many(
        engine, [(event(), [plan(None)]), (event(), [plan(None)])], now=at(3), interval_s=60
    )
    assert [(r.lane, r.token, r.not_before) for r in done.outbox.requests] == [
        (None, 1, at(3)),
        (None, 1, at(3)),
    ]
    assert len({r.run_id for r in done.outbox.requests}) == 2
    async with engine.connect() as conn:
        assert (await conn.execute(select(Lane.name))).all() == []


async def test_an_idle_lane_schedules_its_head_the_interval_after_its_last_finish(
    engine: AsyncEngine,
) -> None:
    first = await enqueue_many(engine, [(event(), [plan("a"), plan("o")])], interval_s=5)
    sent_a, sent_o = await dispatch_all(
        engine, sorted(first.outbox.requests, key=lambda r: r.run_id), T0
    )
    await record_results(engine, [result(sent_o, 3, at_=at(2))], at(2), interval_s=5)
    await record_results(engine, [result(sent_a, 3, at_=at(10))], at(10), interval_s=5)
    assert (await lane_row(engine, "a")).head_run_id is None
    # Lane a finished at 10: its next head waits until 15. Lane o's interval is over and
    # lane b never ran: both are due at once.
    done = await enqueue_many(
        engine,
        [(event(), [plan("a"), plan("o"), plan("b")]), (event(), [plan("a")])],
        now=at(11),
        interval_s=5,
    )
    new = sent_o.run_id + 1
    due = {r.lane: (r.run_id, r.not_before) for r in done.outbox.requests}
    assert due == {"a": (new, at(15)), "o": (new + 1, at(11)), "b": (new + 2, at(11))}
    assert (await lane_row(engine, "a")).head_run_id == new
    assert (await run_row(engine, new + 3)).not_before is None, "the lane's second waits"


# -- gate_many --------------------------------------------------------------------------------


async def test_due_heads_are_dispatched_with_their_event(engine: AsyncEngine) -> None:
    ev_a, ev_b = event(), event()
    done = await enqueue_many(engine, [(ev_a, [plan("a"), plan(None)]), (ev_b, [plan("b")])])
    requests = sorted(done.outbox.requests, key=lambda r: r.run_id)
    decisions = await gate_many(engine, requests, at(1))
    assert [type(d) for d in decisions] == [Dispatch, Dispatch, Dispatch]
    sent = [d.request for d in decisions if isinstance(d, Dispatch)]
    assert [s.run_id for s in sent] == [r.run_id for r in requests], "one decision per request"
    assert [s.event for s in sent] == [ev_a.document(), ev_a.document(), ev_b.document()]
    assert all((s.token, s.attempt, s.requested_at) == (1, 1, at(1)) for s in sent)
    for request in requests:
        row = await run_row(engine, request.run_id)
        assert (row.state, row.dispatched_at) == ("dispatched", at(1))
    assert [(a.run_id, a.attempt, a.dispatched_at) for a in await attempt_rows(engine)] == [
        (r.run_id, 1, at(1)) for r in requests
    ]


async def test_a_head_not_yet_due_waits(engine: AsyncEngine) -> None:
    first = await enqueue_many(engine, [(event(), [plan("a"), plan("a")])], interval_s=5)
    [sent] = await dispatch_all(engine, first.outbox.requests, T0)
    done = await record_results(engine, [result(sent, 3, at_=at(1))], at(1), interval_s=5)
    [nxt] = done.outbox.requests
    assert nxt.not_before == at(6)
    assert await gate_many(engine, [nxt], at(5.5)) == [Wait(at(6))]
    assert (await run_row(engine, nxt.run_id)).state == "queued"
    assert [type(d) for d in await gate_many(engine, [nxt], at(6))] == [Dispatch]


async def test_stale_requests_are_dropped(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a"), plan("a"), plan("b")])])
    head_a, head_b = sorted(done.outbox.requests, key=lambda r: r.run_id)
    [active] = await dispatch_all(engine, [head_b], T0)
    waiting = head_a.model_copy(update={"run_id": head_a.run_id + 1, "token": 0})
    decisions = await gate_many(
        engine,
        [
            head_a.model_copy(update={"token": 99}),  # an old scheduling
            waiting,  # right token, but not the lane's head
            active,  # already dispatched
            head_a.model_copy(update={"run_id": 10**9}),  # no such run
        ],
        at(1),
    )
    assert all(isinstance(d, Stale) for d in decisions), decisions
    reasons = [d.reason for d in decisions if isinstance(d, Stale)]
    assert "rescheduled" in reasons[0] and "head" in reasons[1]
    assert "dispatched" in reasons[2] and "no longer exists" in reasons[3]
    assert (await run_row(engine, head_a.run_id)).state == "queued", "its real request still works"
    assert (await run_row(engine, waiting.run_id)).token == 0
    assert len(await attempt_rows(engine)) == 1


async def test_the_same_request_twice_in_one_batch_dispatches_once(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a")])])
    [head] = done.outbox.requests
    first, second = await gate_many(engine, [head, head], T0)
    assert isinstance(first, Dispatch) and isinstance(second, Stale)
    assert len(await attempt_rows(engine)) == 1


async def test_a_not_queued_run_is_stale(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan(None)])])
    [request] = done.outbox.requests
    [sent] = await dispatch_all(engine, [request], T0)
    await record_results(engine, [result(sent, 3, at_=at(1))], at(1))
    [decision] = await gate_many(engine, [request], at(2))
    assert isinstance(decision, Stale) and "succeeded" in decision.reason


# -- record_started_many and record_results -----------------------------------------------------


async def test_a_start_report_makes_the_run_running_once(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a"), plan(None)])])
    sent = await dispatch_all(engine, done.outbox.requests, T0)
    reports = [started(s, at_=at(0.5), executor="x7") for s in sent]
    assert sorted(await start_many(engine, reports, at(0.5))) == sorted(s.run_id for s in sent)
    assert await start_many(engine, reports, at(0.6)) == [], "a repeat changes nothing"
    for s in sent:
        row = await run_row(engine, s.run_id)
        assert (row.state, row.started_at, row.executor) == ("running", at(0.5), "x7")
    assert {(a.started_at, a.executor) for a in await attempt_rows(engine)} == {(at(0.5), "x7")}


async def test_a_success_ends_the_run_and_the_lane_moves_on_after_the_interval(
    engine: AsyncEngine,
) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a"), plan("a")])], interval_s=5)
    [sent] = await dispatch_all(engine, done.outbox.requests, T0)
    await start_many(engine, [started(sent, at_=at(0.5))], at(0.5))
    recorded = await record_results(engine, [result(sent, 3, at_=at(3))], at(4), interval_s=5)
    assert recorded.recorded == [True]
    assert [n.state for n in recorded.outbox.notices] == ["succeeded"]
    [nxt] = recorded.outbox.requests
    assert (nxt.run_id, nxt.attempt, nxt.token, nxt.not_before) == (sent.run_id + 1, 1, 1, at(8))
    row = await run_row(engine, sent.run_id)
    assert (row.state, row.result, row.started_at, row.finished_at) == (
        "succeeded",
        3,
        at(0.5),
        at(3),
    )
    lane = await lane_row(engine, "a")
    assert (lane.head_run_id, lane.last_finished_at) == (nxt.run_id, at(3))
    [attempt] = await attempt_rows(engine)
    assert (attempt.result, attempt.started_at, attempt.finished_at) == (3, at(0.5), at(3))
    assert attempt.output_tail == f"tail of {sent.run_id}/1"


async def test_a_result_from_the_future_is_recorded_at_now(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a"), plan("a")])], interval_s=5)
    [sent] = await dispatch_all(engine, done.outbox.requests, T0)
    recorded = await record_results(engine, [result(sent, 3, at_=at(9))], at(2), interval_s=5)
    assert [r.not_before for r in recorded.outbox.requests] == [at(7)]
    assert (await run_row(engine, sent.run_id)).finished_at == at(2)


async def test_a_result_with_a_nul_character_is_recorded(engine: AsyncEngine) -> None:
    # Postgres text cannot hold NUL: the contract replaces it, so binary output is no poison.
    done = await enqueue_many(engine, [(event(), [plan("a")])])
    [sent] = await dispatch_all(engine, done.outbox.requests, T0)
    wire = result(sent, 2, at_=at(1), feedback="binary \x00 output").model_dump_json()
    recorded = await record_results(engine, [JobResult.model_validate_json(wire)], at(1))
    assert recorded.recorded == [True]
    assert (await run_row(engine, sent.run_id)).feedback == "binary \ufffd output"


async def test_a_failed_attempt_with_attempts_left_is_queued_again(engine: AsyncEngine) -> None:
    done = await enqueue_many(
        engine,
        [
            (
                event(),
                [
                    plan("a", max_attempts=2, retry_backoff_s=1),  # the interval is longer
                    plan("b", max_attempts=2, retry_backoff_s=10),  # the backoff is longer
                    plan(None, max_attempts=2, retry_backoff_s=1),  # no interval without a lane
                    plan("a"),
                ],
            )
        ],
        interval_s=5,
    )
    sent = await dispatch_all(engine, sorted(done.outbox.requests, key=lambda r: r.run_id), T0)
    recorded = await record_results(
        engine,
        [result(s, 2, at_=at(2), feedback="pod-7 unreachable") for s in sent],
        at(3),
        interval_s=5,
    )
    assert recorded.recorded == [True, True, True]
    assert {n.state for n in recorded.outbox.notices} == {"queued"}
    again = {r.run_id: (r.attempt, r.token, r.not_before) for r in recorded.outbox.requests}
    a, b, free = (s.run_id for s in sent)
    assert again == {a: (2, 2, at(7)), b: (2, 2, at(12)), free: (2, 2, at(3))}
    row = await run_row(engine, a)
    assert (row.state, row.dispatched_at, row.finished_at) == ("queued", None, None)
    assert (row.result, row.feedback) == (2, "pod-7 unreachable"), "shown in the Queue"
    lane = await lane_row(engine, "a")
    assert (lane.head_run_id, lane.last_finished_at) == (a, at(2)), "the retry keeps the lane"
    assert (await run_row(engine, a + 3)).token == 0


async def test_the_last_failed_attempt_fails_the_run_and_the_lane_moves_on(
    engine: AsyncEngine,
) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a", max_attempts=2), plan("a")])])
    [sent] = await dispatch_all(engine, done.outbox.requests, T0)
    retry = await record_results(engine, [result(sent, 2, at_=at(1), feedback="one")], at(1))
    [sent2] = await dispatch_all(engine, retry.outbox.requests, at(1))
    end = await record_results(engine, [result(sent2, 2, at_=at(2), feedback="two")], at(2))
    assert [n.state for n in end.outbox.notices] == ["failed"]
    assert [r.run_id for r in end.outbox.requests] == [sent.run_id + 1]
    row = await run_row(engine, sent.run_id)
    assert (row.state, row.attempt, row.finished_at, row.feedback) == ("failed", 2, at(2), "two")
    history = [(a.attempt, a.result, a.feedback) for a in await attempt_rows(engine)]
    assert history == [(1, 2, "one"), (2, 2, "two")]


async def test_a_result_twice_in_one_batch_is_recorded_once(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a"), plan("a")])])
    [sent] = await dispatch_all(engine, done.outbox.requests, T0)
    copy = result(sent, 3, at_=at(1))
    recorded = await record_results(engine, [copy, copy], at(1))
    assert recorded.recorded == [True, False]
    assert len(recorded.outbox.notices) == 1 and len(recorded.outbox.requests) == 1
    assert (await record_results(engine, [copy], at(2))).recorded == [False]


async def test_a_result_for_another_attempt_changes_nothing(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a", max_attempts=3), plan(None)])])
    first, free = await dispatch_all(
        engine, sorted(done.outbox.requests, key=lambda r: r.run_id), T0
    )
    retry = await record_results(engine, [result(first, 2, at_=at(1))], at(1))
    await dispatch_all(engine, retry.outbox.requests, at(1))
    before = await snapshot(engine)
    recorded = await record_results(
        engine,
        [
            result(first, 3, at_=at(2), attempt=1),  # the attempt before the active one
            result(first, 3, at_=at(2), attempt=3),  # an attempt that never started
            result(free, 3, at_=at(2)).model_copy(update={"run_id": 10**9}),  # no such run
        ],
        at(2),
    )
    assert recorded.recorded == [False, False, False]
    assert recorded.outbox.notices == [] and recorded.outbox.requests == []
    assert await snapshot(engine) == before


# -- dispatching at once ----------------------------------------------------------------------


async def test_due_heads_are_dispatched_in_the_transaction_that_scheduled_them(
    engine: AsyncEngine,
) -> None:
    # Lane b finished a run at 1 s: with an interval of 5 s its next run is due at 6 s.
    first = await enqueue_many(engine, [(event(), [plan("b")])], interval_s=5)
    [sent] = await dispatch_all(engine, first.outbox.requests, T0)
    await record_results(engine, [result(sent, 3, at_=at(1))], at(1), interval_s=5)
    ev = event()

    async def enqueue_and_dispatch(conn: AsyncConnection) -> Outbox:
        planned = [plan("a"), plan(None), plan("b")]
        done = await ledger.enqueue(conn, [(ev, planned)], interval_s=5, now=at(2), dispatch=True)
        return done.outbox

    outbox = await tx(engine, enqueue_and_dispatch)
    a, free, b = sorted(n.run_id for n in outbox.notices)
    assert sorted(w.run_id for w in outbox.work) == [a, free]
    assert all(w.event == ev.document() and w.token == 1 for w in outbox.work)
    assert [(r.run_id, r.not_before) for r in outbox.requests] == [(b, at(6))], "not due yet"
    assert [(await run_row(engine, i)).state for i in (a, free, b)] == [
        "dispatched",
        "dispatched",
        "queued",
    ]
    assert [(t.run_id, t.attempt, t.dispatched_at) for t in await attempt_rows(engine)] == [
        (sent.run_id, 1, T0),
        (a, 1, at(2)),
        (free, 1, at(2)),
    ], "no attempt for b, which waits"
    # A request for a run dispatched this way (a redelivery's re-send, say) is dropped.
    assert [decided(d) for d in await gate_many(engine, outbox.work, at(3))] == [
        ("stale", "the run is dispatched"),
        ("stale", "the run is dispatched"),
    ]


async def test_dispatching_at_once_leaves_what_the_gate_would_leave(
    engine: AsyncEngine, reference: AsyncEngine
) -> None:
    """Enqueue and results that dispatch (`dispatch=True`), against the same steps without,
    followed by the gate dispatching the due requests at the same instant: the same database
    and the same work for the executors."""
    events = [
        (event(), [plan("a"), plan("a"), plan("a"), plan("a"), plan(None)]),
        (event(), [plan("b", max_attempts=2), plan("c", max_attempts=2, retry_backoff_s=9)]),
    ]

    async def through_gate(step: Callable[..., Awaitable[Any]]) -> Outbox:
        outbox: Outbox = (await tx(reference, partial(step, dispatch=False))).outbox
        due = [r for r in outbox.requests if r.not_before <= now]
        decisions, _ = await tx(reference, lambda c: ledger.gate(c, due, now=now, interval_s=0))
        work = [d.request for d in decisions if isinstance(d, Dispatch)]
        assert len(work) == len(due)
        rest = [r for r in outbox.requests if r.not_before > now]
        return Outbox(requests=rest, notices=outbox.notices, work=work)

    async def both(step: Callable[..., Awaitable[Any]]) -> list[JobRequest]:
        direct: Outbox = (await tx(engine, partial(step, dispatch=True))).outbox
        gated = await through_gate(step)
        same_messages(direct.work, gated.work)
        same_messages(direct.requests, gated.requests)
        same_messages(direct.notices, gated.notices)
        return direct.work

    now = at(1)
    work = await both(partial(ledger.enqueue, batch=events, interval_s=0, now=now))
    assert len(work) == 4, "a, the run without a lane, b and c"
    now = at(2)
    # a's first run succeeds (its next is due at once), b and c fail with an attempt left
    # (b is due again at once, c after its backoff), the run without a lane fails for good.
    codes = {w.lane: 3 if w.lane == "a" else 2 for w in work}
    reports = [result(w, codes[w.lane], at_=at(2)) for w in work]
    work = await both(partial(ledger.record, started=[], results=reports, interval_s=0, now=now))
    assert sorted((w.lane, w.attempt) for w in work) == [("a", 1), ("b", 2)]
    assert await snapshot(engine) == await snapshot(reference)

    [second_a] = [w for w in work if w.lane == "a"]
    now = at(3)
    [third_a] = await both(
        partial(
            ledger.record, started=[], results=[result(second_a, 3, at_=now)], interval_s=0, now=now
        )
    )
    assert third_a.lane == "a", "a's third run"
    assert await snapshot(engine) == await snapshot(reference)

    # With an interval, the lane's next run becomes its head but waits: scheduled, not sent.
    now = at(4)
    report = result(third_a, 3, at_=at(4))
    done = await tx(
        engine, lambda c: ledger.record(c, [], [report], interval_s=5, now=now, dispatch=True)
    )
    assert done.outbox.work == []
    [request] = done.outbox.requests
    assert (request.lane, request.not_before) == ("a", at(9))
    assert (await run_row(engine, request.run_id)).state == "queued"


# -- the rules under random workloads ------------------------------------------------------------


@pytest.fixture
async def reference(postgres_url: str, template_database: str) -> AsyncIterator[AsyncEngine]:
    """A second database, cloned like `engine`'s, for the same steps taken another way."""
    async with databases.clone(postgres_url, template_database) as url:
        eng = create_engine(url, pool_size=4)
        try:
            yield eng
        finally:
            await eng.dispose()


INTERVAL_S = 1.5
LANES = ("a", "b", "c", None)


def decided(decision: Dispatch | Wait | Stale) -> tuple[str, Any]:
    if isinstance(decision, Dispatch):
        return ("dispatch", decision.request)
    if isinstance(decision, Wait):
        return ("wait", decision.until)
    return ("stale", decision.reason)


def same_messages(one: Sequence[Any], other: Sequence[Any]) -> None:
    """The same requests or notices, in any order."""
    assert sorted(m.model_dump_json() for m in one) == sorted(m.model_dump_json() for m in other)


class Ledger:
    """A workload's steps applied to the ledger, one batch each, with the rules that must
    hold checked after every step."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.seen: Counter[str] = Counter()  # what the workload exercised
        self.tokens: dict[int, int] = {}  # the newest token the ledger gave each run

    def issued(self, outbox: Outbox) -> None:
        for r in [*outbox.requests, *outbox.work]:
            self.tokens[r.run_id] = max(r.token, self.tokens.get(r.run_id, 0))

    async def step(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        out = await tx(self.engine, fn)
        assert await inconsistent_lanes(self.engine) == [], "one head, the only active run"
        return out

    async def enqueue(
        self, batch: list[tuple[Event, list[PlannedRun]]], now: datetime
    ) -> list[JobRequest]:
        done = await self.step(lambda c: ledger.enqueue(c, batch, interval_s=INTERVAL_S, now=now))
        self.seen.update("duplicate event" for r in done.recorded if not r)
        self.issued(done.outbox)
        return done.outbox.requests

    async def gate(
        self, requests: list[JobRequest], now: datetime
    ) -> list[Dispatch | Wait | Stale]:
        decisions, _ = await self.step(
            lambda c: ledger.gate(c, requests, now=now, interval_s=INTERVAL_S)
        )
        for request, decision in zip(requests, decisions, strict=True):
            if isinstance(decision, Dispatch):
                assert request.token == self.tokens[request.run_id], "a stale token dispatched"
                assert request.not_before <= now
        self.seen.update(decided(d)[0] for d in decisions)
        return decisions

    async def start(self, reports: list[RunStarted], now: datetime) -> None:
        await self.step(lambda c: ledger.record(c, reports, [], interval_s=INTERVAL_S, now=now))

    async def finish(self, results: list[JobResult], now: datetime) -> list[JobRequest]:
        done = await self.step(
            lambda c: ledger.record(c, [], results, interval_s=INTERVAL_S, now=now)
        )
        self.seen.update("ignored result" for r in done.recorded if not r)
        self.seen.update(n.state for n in done.outbox.notices)
        self.issued(done.outbox)
        return done.outbox.requests

    async def operate(self, action: Callable[[AsyncConnection], Awaitable[Outbox]]) -> Outbox:
        out = await self.step(action)
        self.issued(out)
        self.seen["operator"] += 1
        return out


class Workload:
    """A random but seeded stream of messages: new and redelivered events over a few lanes,
    the broker handing due (and sometimes early or duplicated) requests to the gate,
    executors reporting starts (some lost) and results (some duplicated, some late), and now
    and then an operator's action."""

    ENQUEUE_TICKS = 12

    def __init__(self, driven: Ledger, seed: int, *, redelivered_starts: bool) -> None:
        self.driven = driven
        self.rng = random.Random(seed)
        self.redelivered_starts = redelivered_starts
        self.events: list[Event] = []
        self.broker: dict[tuple[int, int, int], JobRequest] = {}
        self.work: list[JobRequest] = []  # dispatched, not reported started yet
        self.running: list[tuple[JobRequest, datetime]] = []
        self.reports: list[RunStarted] = []
        self.results: list[JobResult] = []

    def planned(self) -> PlannedRun:
        lane = self.rng.choice(LANES)
        return plan(
            lane,
            job_name=f"job-{lane}",
            max_attempts=self.rng.choice((1, 2)),
            retry_backoff_s=self.rng.choice((0.0, 1.0, 4.0)),
            error="template failed" if self.rng.random() < 0.08 else None,
        )

    def new_events(self) -> list[tuple[Event, list[PlannedRun]]]:
        batch: list[tuple[Event, list[PlannedRun]]] = []
        for _ in range(self.rng.randint(0, 4)):
            if self.events and self.rng.random() < 0.15:
                ev = self.rng.choice(self.events)  # redelivered from an earlier batch
            else:
                ev = event(f"e{len(self.events)}")
                self.events.append(ev)
            runs = [self.planned() for _ in range(self.rng.randint(0, 3))]
            batch.append((ev, runs))
            if self.rng.random() < 0.1:
                batch.append((ev, runs))  # twice in the same batch
        return batch

    def send(self, requests: list[JobRequest]) -> None:
        for r in requests:
            self.broker[r.run_id, r.attempt, r.token] = r

    async def gate(self, now: datetime) -> None:
        due = [r for r in self.broker.values() if r.not_before <= now]
        early = [r for r in self.broker.values() if r.not_before > now]
        batch = sorted(due, key=lambda r: r.run_id)
        if early and self.rng.random() < 0.3:
            batch.append(self.rng.choice(early))
        if batch and self.rng.random() < 0.2:
            batch.append(self.rng.choice(batch))
        if not batch:
            return
        for request, decision in zip(batch, await self.driven.gate(batch, now), strict=True):
            if isinstance(decision, Wait):
                continue  # the delay stage holds it until it is due
            self.broker.pop((request.run_id, request.attempt, request.token), None)
            if isinstance(decision, Dispatch):
                self.work.append(decision.request)

    async def start(self, now: datetime) -> None:
        batch: list[RunStarted] = []
        for request in self.work:
            self.running.append((request, now))
            if self.rng.random() < 0.85:  # else the report is lost
                batch.append(started(request, at_=now, executor=f"x{request.run_id % 3}"))
            if self.redelivered_starts and self.rng.random() < 0.3:
                batch.append(started(request, at_=now + timedelta(seconds=0.5), executor="x9"))
        self.work = []
        if self.redelivered_starts and self.reports and self.rng.random() < 0.5:
            late = self.rng.choice(self.reports)
            batch.append(late.model_copy(update={"executor": "x8"}))
        self.reports += batch
        if batch:
            await self.driven.start(batch, now)

    async def finish(self, now: datetime) -> None:
        batch: list[JobResult] = []
        still: list[tuple[JobRequest, datetime]] = []
        for request, since in self.running:
            if self.rng.random() < 0.3:
                still.append((request, since))  # the script takes another second
                continue
            failed = self.rng.random() < 0.35
            # Now and then an executor's clock is ahead: the ledger records `now` instead.
            end = now + timedelta(seconds=2 if self.rng.random() < 0.1 else 0)
            batch.append(
                JobResult(
                    run_id=request.run_id,
                    attempt=request.attempt,
                    result=2 if failed else 3,
                    status="failed" if failed else "succeeded",
                    feedback="boom" if failed else "",
                    started_at=since,
                    finished_at=end,
                    executor=f"x{request.run_id % 3}",
                    output_tail=f"{request.run_id}/{request.attempt}",
                )
            )
        self.running = still
        if batch and self.rng.random() < 0.2:
            batch.append(self.rng.choice(batch))  # a duplicate in the same batch
        if self.results and self.rng.random() < 0.3:
            batch.append(self.rng.choice(self.results))  # a redelivered, recorded result
        self.rng.shuffle(batch)
        self.results += batch
        if batch:
            self.send(await self.driven.finish(batch, now))

    async def operate(self, now: datetime) -> None:
        """Now and then an operator removes a waiting run, executes one now, or executes a
        failed run again: the batches must honour what that did to the lanes."""
        if self.rng.random() > 0.15:
            return
        async with self.driven.engine.connect() as conn:
            rows = (await conn.execute(select(Run.id, Run.state).order_by(Run.id))).all()
        queued = [r.id for r in rows if r.state == "queued"]
        failed = [r.id for r in rows if r.state == "failed"]
        choice = self.rng.choice(("remove", "now", "again"))
        if choice == "remove" and queued:
            run_id = self.rng.choice(queued)
            out = await self.driven.operate(
                lambda c: ledger.remove(c, run_id, interval_s=INTERVAL_S, now=now)
            )
        elif choice == "now" and queued:
            run_id = self.rng.choice(queued)
            out = await self.driven.operate(lambda c: ledger.execute_now(c, run_id, now=now))
        elif choice == "again" and failed:
            run_id = self.rng.choice(failed)
            out = await self.driven.operate(lambda c: ledger.execute_failed(c, run_id, now=now))
        else:
            return
        self.send(out.requests)

    async def run(self) -> None:
        """Drive every run to its end, one step a second."""
        for tick in range(500):
            now = at(tick)
            if tick < self.ENQUEUE_TICKS:
                self.send(await self.driven.enqueue(self.new_events(), now))
            elif not (self.broker or self.work or self.running):
                return
            await self.operate(now)
            await self.gate(now)
            await self.start(now)
            await self.finish(now)
        raise AssertionError("the workload never finished")


async def drive(engine: AsyncEngine, seed: int, **kw: Any) -> None:
    driven = Ledger(engine)
    await Workload(driven, seed, **kw).run()
    # The workload went through every rule it is meant to check.
    exercised = {"dispatch", "wait", "stale", "duplicate event", "ignored result", "queued"}
    assert exercised | {"operator"} <= set(driven.seen), driven.seen
    async with engine.connect() as conn:
        assert await ledger.queued_count(conn) == 0, "every run reached its end"
        runs = {r.id: r for r in (await conn.execute(select(Run.__table__))).all()}
        tries = (
            await conn.execute(
                select(Attempt.__table__).order_by(Attempt.dispatched_at, Attempt.run_id)
            )
        ).all()
    assert len(runs) > 20
    assert {r.state for r in runs.values()} <= {"succeeded", "failed", "removed"}
    assert {"succeeded", "failed"} <= {r.state for r in runs.values()}
    for name in ("a", "b", "c"):
        lane = [t for t in tries if runs[t.run_id].lane == name and t.dispatched_at]
        # In order: the runs no operator moved start in the order they were enqueued...
        firsts = [
            t.run_id for t in lane if t.attempt == 1 and runs[t.run_id].execute_now_at is None
        ]
        assert firsts == sorted(firsts), f"lane {name} out of order"
        # ...each after the previous attempt ended, and the interval after it.
        for before, after in itertools.pairwise(lane):
            assert before.finished_at is not None and after.dispatched_at >= before.finished_at
            if runs[after.run_id].execute_now_at is None:
                assert after.dispatched_at >= before.finished_at + timedelta(seconds=INTERVAL_S)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_workloads_keep_every_rule(engine: AsyncEngine, seed: int) -> None:
    await drive(engine, seed, redelivered_starts=False)


async def test_random_workloads_with_redelivered_start_reports_keep_every_rule(
    engine: AsyncEngine,
) -> None:
    await drive(engine, 4, redelivered_starts=True)


# -- concurrency ----------------------------------------------------------------------------------

# Lanes whose head breaks the rule: a run of the lane that is queued, dispatched or running,
# the lane's only active run; none only while the lane has nothing waiting or active.
INCONSISTENT_LANES = text(
    """
    SELECT l.name FROM lanes l LEFT JOIN runs h ON h.id = l.head_run_id
    WHERE (l.head_run_id IS NOT NULL
           AND (h.lane IS DISTINCT FROM l.name
                OR h.state NOT IN ('queued', 'dispatched', 'running')))
       OR EXISTS (SELECT 1 FROM runs r
                  WHERE r.lane = l.name AND r.state IN ('queued', 'dispatched', 'running')
                    AND l.head_run_id IS NULL)
       OR EXISTS (SELECT 1 FROM runs r
                  WHERE r.lane = l.name AND r.state IN ('dispatched', 'running')
                    AND r.id IS DISTINCT FROM l.head_run_id)
    """
)


async def inconsistent_lanes(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.scalars(INCONSISTENT_LANES)).all())


async def test_concurrent_batches_over_shared_lanes_keep_the_lanes_consistent(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=12)
    names = [f"lane-{i}" for i in range(6)]
    finished = asyncio.Event()

    async def one_at_a_time(todo: list[JobRequest], rng: random.Random) -> list[JobRequest]:
        """A worker at low load: batches of one."""
        nxt: list[JobRequest] = []
        for request in todo:
            [decision] = await gate_many(engine, [request], T0)
            assert isinstance(decision, Dispatch), decision
            outcome = result(decision.request, rng.choice((2, 3)), at_=T0)
            nxt += (await record_results(engine, [outcome], T0)).outbox.requests
        return nxt

    async def in_batches(todo: list[JobRequest], rng: random.Random) -> list[JobRequest]:
        rng.shuffle(todo)
        # Each request is its lane's head (or a run without a lane), due at once.
        sent = await dispatch_all(engine, todo, T0)
        await start_many(engine, [started(s, at_=T0) for s in sent], T0)
        rng.shuffle(sent)
        results = [result(s, rng.choice((2, 3)), at_=T0) for s in sent]
        return (await record_results(engine, results, T0)).outbox.requests

    async def worker(k: int) -> int:
        rng = random.Random(k)
        step = one_at_a_time if k % 4 == 3 else in_batches
        todo: list[JobRequest] = []
        created = 0
        for _ in range(3):
            # Overlapping lanes, named in a different order by each worker.
            order = rng.sample(names, 4)
            batch = [
                (event(), [plan(order[0], max_attempts=2), plan(order[1]), plan(None)]),
                (event(), [plan(order[2]), plan(order[3], max_attempts=2), plan(order[0])]),
            ]
            done = await enqueue_many(engine, batch)
            created += sum(len(p) for _, p in batch)
            todo = await step(todo + done.outbox.requests, rng)
        while todo:
            todo = await step(todo, rng)
        return created

    async def upkeep() -> None:
        """The lane check, the reaper and interval changes, all the while: they lock lanes
        of their own choosing, in the ledger's order too. (Nothing is overdue or lost here:
        they must find nothing to change, and never deadlock a batch.)"""
        while not finished.is_set():
            out = await tx(engine, partial(ledger.check_lanes, interval_s=0, now=T0, grace_s=30))
            reaped = await tx(
                engine,
                partial(
                    ledger.reap,
                    now=T0,
                    interval_s=0,
                    running_grace_s=60,
                    dispatch_grace_s=60,
                    work_queue_idle=True,
                ),
            )
            moved = await tx(engine, partial(ledger.apply_interval, interval_s=0, now=T0))
            assert (out.requests, reaped.notices, reaped.work, moved.requests) == ([], [], [], [])

    async def watch() -> list[str]:
        """The lanes' rule holds in every committed state, not only at the end."""
        seen: list[str] = []
        while not finished.is_set():
            seen += await inconsistent_lanes(engine)
            await asyncio.sleep(0.005)
        return seen

    try:
        watcher = asyncio.create_task(watch())
        repairs = asyncio.create_task(upkeep())
        try:
            created = sum(await asyncio.gather(*(worker(k) for k in range(10))))
        finally:
            finished.set()
        assert await watcher == []
        await repairs
        assert await inconsistent_lanes(engine) == []
        async with engine.connect() as conn:
            states = dict(
                (await conn.execute(select(Run.state, func.count()).group_by(Run.state))).all()
            )
            heads = (await conn.scalars(select(Lane.head_run_id))).all()
        assert sum(states.values()) == created
        assert set(states) <= {"succeeded", "failed"}, "every run ran to its end"
        assert set(heads) == {None}, "and every lane is idle"
    finally:
        await engine.dispose()


# -- reports and locks ------------------------------------------------------------------------


async def test_of_two_reports_of_one_attempt_the_first_counts(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a")])])
    [sent] = await dispatch_all(engine, done.outbox.requests, T0)
    # The request reached a second executor (the first seemed lost): the first report counts
    # and the repeat is ignored.
    reports = [started(sent, at_=at(1), executor="x1"), started(sent, at_=at(2), executor="x2")]
    assert await start_many(engine, reports, at(2)) == [sent.run_id]
    row = await run_row(engine, sent.run_id)
    [attempt] = await attempt_rows(engine)
    assert (row.started_at, row.executor) == (at(1), "x1")
    assert (attempt.started_at, attempt.executor) == (at(1), "x1")


async def test_a_late_start_report_leaves_a_finished_attempt_alone(engine: AsyncEngine) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a"), plan("b")])])
    first, second = await dispatch_all(
        engine, sorted(done.outbox.requests, key=lambda r: r.run_id), T0
    )
    await start_many(engine, [started(first, at_=at(1))], at(1))
    await record_results(engine, [result(first, 3, at_=at(2))], at(2))
    # A redelivered copy of the first run's report comes in the batch of the second's.
    late = started(first, at_=at(3), executor="x2")
    assert await start_many(engine, [started(second, at_=at(3)), late], at(3)) == [second.run_id]
    attempts = {a.run_id: a for a in await attempt_rows(engine)}
    assert (attempts[first.run_id].started_at, attempts[first.run_id].executor) == (at(1), "x1")
    assert (attempts[second.run_id].started_at, attempts[second.run_id].executor) == (at(3), "x1")


async def until_waiting(engine: AsyncEngine, count: int) -> None:
    """Until `count` sessions of the test's database wait for a lock."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(500):
        async with engine.connect() as conn:
            if (await conn.scalar(query) or 0) >= count:
                return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{count} sessions never waited for a lock")


async def hold(conn: AsyncConnection, rows: Select[Any]) -> None:
    """Begin a transaction on `conn` that holds these rows, as a transition under way would."""
    await conn.begin()
    await conn.execute(rows.with_for_update())


async def grow_history(engine: AsyncEngine, count: int) -> None:
    """Runs of a busy system (finished ones and, at saturation, many out on executors) with
    fresh statistics: the planner then walks a batch in message order (a nested loop over
    the batch) rather than scanning a tiny table in id order."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO runs (job_name, script, command, state, dispatched_at) "
                "SELECT 'old', 'noop', 'cmd', "
                "CASE WHEN g % 2 = 0 THEN 'dispatched' ELSE 'succeeded' END, :at "
                "FROM generate_series(1, :n) AS g"
            ),
            {"at": T0, "n": count},
        )
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE runs"))


async def test_start_reports_in_any_order_do_not_deadlock_with_results(
    engine: AsyncEngine,
) -> None:
    await grow_history(engine, 3000)
    done = await enqueue_many(engine, [(event(), [plan("a"), plan("b")])])
    x, y = await dispatch_all(engine, sorted(done.outbox.requests, key=lambda r: r.run_id), T0)
    async with engine.connect() as holder:
        await hold(holder, select(Run.id).where(Run.id == x.run_id))
        # Lanes a and b locked, then queued for run x (lane, then run, in id order).
        results = asyncio.create_task(
            record_results(engine, [result(x, 3, at_=at(1)), result(y, 3, at_=at(1))], at(1))
        )
        await until_waiting(engine, 1)
        # The same runs reported started, y first: queued for x too.
        starts = asyncio.create_task(
            start_many(engine, [started(y, at_=at(0.5)), started(x, at_=at(0.5))], at(0.5))
        )
        await until_waiting(engine, 2)
        # The results batch takes x next and then wants y, which the start batch already
        # updated while it waits for x: each waits for the other.
        await holder.commit()
    outcome = await asyncio.gather(results, starts, return_exceptions=True)
    assert not [o for o in outcome if isinstance(o, BaseException)], outcome


async def test_batches_creating_a_lane_do_not_deadlock(engine: AsyncEngine) -> None:
    await enqueue_many(engine, [(event(), [plan("a")])])  # lane a exists, lane b does not
    async with engine.connect() as holder:
        await hold(holder, select(Lane.name).where(Lane.name == "a"))
        # An enqueue locks its lanes in name order: it waits for lane a first.
        one = asyncio.create_task(enqueue_many(engine, [(event(), [plan("a"), plan("b")])]))
        await until_waiting(engine, 1)
        # The batch inserts lane b (held until it commits), then waits for lane a too.
        many = asyncio.create_task(enqueue_many(engine, [(event(), [plan("a"), plan("b")])]))
        await until_waiting(engine, 2)
        # The first takes lane a next and waits for the batch's lane b, which waits
        # for lane a.
        await holder.commit()
    outcome = await asyncio.gather(one, many, return_exceptions=True)
    assert not [o for o in outcome if isinstance(o, BaseException)], outcome
    lane_b = await lane_row(engine, "b")
    assert lane_b is not None and lane_b.head_run_id is not None


async def test_starts_and_results_in_one_transaction_do_not_deadlock_with_the_gate(
    engine: AsyncEngine,
) -> None:
    done = await enqueue_many(engine, [(event(), [plan("a")])])
    [x] = await dispatch_all(engine, done.outbox.requests, T0)
    async with engine.connect() as conn:
        # The results consumer's batch: x's start report first, which takes x's row...
        await conn.begin()
        await ledger.record(conn, [started(x, at_=at(0.5))], [], interval_s=0, now=at(1))
        # ...while a redelivered request of x reaches the gate: lane a, then (waiting) x...
        gate = asyncio.create_task(gate_many(engine, [x], at(1)))
        await until_waiting(engine, 1)
        # ...then x's result, which wants lane a.
        errors: list[BaseException] = []
        try:
            await ledger.record(conn, [], [result(x, 3, at_=at(1))], interval_s=0, now=at(1))
            await conn.commit()
        except DBAPIError as exc:
            errors.append(exc)
    [gated] = await asyncio.gather(gate, return_exceptions=True)
    assert not errors and not isinstance(gated, BaseException), (errors, gated)
    assert [type(d) for d in gated] == [Stale], "the gate goes after the batch"
    assert (await run_row(engine, x.run_id)).state == "succeeded"

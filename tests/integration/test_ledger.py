"""The ledger's transitions against the real Postgres (one cloned database per test)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from ledger_kit import T0, at, event, plan, tx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.messages import Event, JobRequest, JobResult, RunStarted
from jobmanager.jobs.spec import PlannedRun
from jobmanager.store import ledger
from jobmanager.store.ledger import Dispatch, Lost, Stale, Wait
from jobmanager.store.models import Attempt, Lane, Run
from jobmanager.store.outbox import Outbox


async def enqueue(
    engine: AsyncEngine,
    *planned: PlannedRun,
    now: datetime = T0,
    interval_s: float = 0.0,
    ev: Event | None = None,
    redelivered: bool = False,
) -> Outbox | None:
    """One event, a batch of one; None if it was seen before (with, when `redelivered`,
    the requests it re-sends in `resent`)."""
    ev = ev or event()
    done = await tx(
        engine,
        lambda c: ledger.enqueue(
            c,
            [(ev, list(planned))],
            interval_s=interval_s,
            now=now,
            redelivered=[redelivered],
        ),
    )
    resent.clear()
    if not done.recorded[0]:
        resent.extend(done.outbox.requests)
        return None
    return done.outbox


resent: list[JobRequest] = []


async def gate(engine: AsyncEngine, request: JobRequest, now: datetime) -> Any:
    [decision], _ = await tx(engine, lambda c: ledger.gate(c, [request], now=now, interval_s=0))
    return decision


async def record_started(engine: AsyncEngine, started: RunStarted, now: datetime) -> Outbox:
    done = await tx(engine, lambda c: ledger.record(c, [started], [], interval_s=0, now=now))
    return done.outbox


async def finish(
    engine: AsyncEngine,
    request: JobRequest,
    code: int,
    *,
    at_: datetime,
    interval_s: float = 0.0,
    feedback: str = "",
) -> Outbox:
    result = JobResult(
        run_id=request.run_id,
        attempt=request.attempt,
        result=code,  # type: ignore[arg-type]
        status="succeeded" if code == 3 else "failed",
        feedback=feedback,
        started_at=at_,
        finished_at=at_,
        executor="x1",
    )
    done = await tx(
        engine, lambda c: ledger.record(c, [], [result], interval_s=interval_s, now=at_)
    )
    return done.outbox


async def run_row(engine: AsyncEngine, run_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(Run.__table__).where(Run.id == run_id))).one()


async def dispatch(engine: AsyncEngine, request: JobRequest, now: datetime) -> JobRequest:
    decision = await gate(engine, request, now)
    assert isinstance(decision, Dispatch), decision
    return decision.request


async def test_enqueue_records_event_once_and_schedules_lane_head(engine: AsyncEngine) -> None:
    ev = event("e-1")
    first = await enqueue(engine, plan(), plan(), ev=ev)
    assert first is not None
    assert len(first.notices) == 2 and {n.state for n in first.notices} == {"queued"}
    assert len(first.requests) == 1, "only the lane's head goes to the broker"
    head = first.requests[0]
    assert head.not_before == T0 and head.token == 1 and head.attempt == 1
    assert await enqueue(engine, plan(), ev=ev) is None, "a duplicate event creates nothing"
    async with engine.connect() as conn:
        count = len((await conn.execute(select(Run.id))).all())
        lane = (await conn.execute(select(Lane.__table__))).one()
    assert count == 2
    assert lane.head_run_id == head.run_id


async def test_a_lane_runs_one_at_a_time_with_the_interval(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan(), interval_s=2.0)
    assert out is not None
    first = out.requests[0]
    more = await enqueue(engine, plan(), interval_s=2.0)
    assert more is not None and more.requests == [], "the lane already has a head"
    sent = await dispatch(engine, first, T0)
    assert sent.event is not None and sent.event["event_type"] == "channel.updated"
    done = await finish(engine, sent, 3, at_=at(1), interval_s=2.0)
    [second] = done.requests
    assert second.run_id == first.run_id + 1
    assert second.not_before == at(3), "the next run waits the interval after the finish"
    assert isinstance(await gate(engine, second, at(2.5)), Wait)
    await dispatch(engine, second, at(3))
    assert (await run_row(engine, first.run_id)).state == "succeeded"


async def test_gate_drops_stale_and_duplicate_requests(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan())
    assert out is not None
    request = out.requests[0]
    assert isinstance(await gate(engine, request.model_copy(update={"token": 99}), T0), Stale)
    await dispatch(engine, request, T0)
    again = await gate(engine, request, T0)
    assert isinstance(again, Stale) and "dispatched" in again.reason


async def test_results_are_recorded_once(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan())
    assert out is not None
    sent = await dispatch(engine, out.requests[0], T0)
    started = RunStarted(run_id=sent.run_id, attempt=1, executor="x1", started_at=at(0.1))
    first_start = await record_started(engine, started, at(0.1))
    assert [n.state for n in first_start.notices] == ["running"]
    repeat = await record_started(engine, started, at(0.1))
    assert repeat.notices == []
    first = await finish(engine, sent, 3, at_=at(1))
    assert len(first.requests) == 1
    second = await finish(engine, sent, 3, at_=at(1))
    assert second.requests == [] and second.notices == [], "a duplicate result changes nothing"
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Attempt.__table__))).all()
    assert len(rows) == 1 and rows[0].result == 3 and rows[0].started_at == at(0.1)


async def test_failed_attempts_retry_with_backoff_then_succeed(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(max_attempts=3, retry_backoff_s=10), plan())
    assert out is not None
    sent = await dispatch(engine, out.requests[0], T0)
    retry = await finish(engine, sent, 2, at_=at(1), feedback="pod-7 unreachable")
    [again] = retry.requests
    assert (again.run_id, again.attempt, again.not_before) == (sent.run_id, 2, at(11))
    row = await run_row(engine, sent.run_id)
    assert row.state == "queued" and row.feedback == "pod-7 unreachable", "shown in the Queue"
    sent2 = await dispatch(engine, again, at(11))
    done = await finish(engine, sent2, 3, at_=at(12))
    assert done.requests[0].run_id == sent.run_id + 1, "the lane moves on after the retry"
    async with engine.connect() as conn:
        history = (
            await conn.execute(
                select(Attempt.attempt, Attempt.result, Attempt.feedback).order_by(Attempt.attempt)
            )
        ).all()
    assert [tuple(h) for h in history] == [(1, 2, "pod-7 unreachable"), (2, 3, "")]


async def test_last_failed_attempt_ends_in_failed(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(max_attempts=1))
    assert out is not None
    sent = await dispatch(engine, out.requests[0], T0)
    done = await finish(engine, sent, 2, at_=at(1), feedback="boom")
    assert done.requests == [] and [n.state for n in done.notices] == ["failed"]
    row = await run_row(engine, sent.run_id)
    assert (row.state, row.result, row.feedback) == ("failed", 2, "boom")


async def test_remove_a_waiting_run_and_the_lane_moves_on(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan(), plan())
    assert out is not None
    head = out.requests[0]
    sent = await dispatch(engine, head, T0)
    with pytest.raises(ledger.Conflict, match="already dispatched"):
        await tx(engine, lambda c: ledger.remove(c, sent.run_id, interval_s=0, now=T0))
    second, third = head.run_id + 1, head.run_id + 2
    removed = await tx(engine, lambda c: ledger.remove(c, second, interval_s=0, now=T0))
    assert [n.state for n in removed.notices] == ["removed"] and removed.requests == []
    done = await finish(engine, sent, 3, at_=at(1))
    assert [r.run_id for r in done.requests] == [third]
    with pytest.raises(ledger.RunNotFound):
        await tx(engine, lambda c: ledger.remove(c, 10**9, interval_s=0, now=T0))


async def test_removing_the_scheduled_head_schedules_the_next(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan())
    assert out is not None
    head = out.requests[0]
    moved = await tx(engine, lambda c: ledger.remove(c, head.run_id, interval_s=0, now=at(1)))
    assert [r.run_id for r in moved.requests] == [head.run_id + 1]
    assert isinstance(await gate(engine, head, at(1)), Stale)


async def test_execute_now_takes_an_idle_lane_at_once(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan(), plan(), interval_s=60)
    assert out is not None
    sent = await dispatch(engine, out.requests[0], T0)
    done = await finish(engine, sent, 3, at_=at(1), interval_s=60)
    [scheduled] = done.requests
    assert scheduled.not_before == at(61)
    last = scheduled.run_id + 1
    now = await tx(engine, lambda c: ledger.execute_now(c, last, now=at(2)))
    [urgent] = now.requests
    assert (urgent.run_id, urgent.not_before) == (last, at(2))
    assert isinstance(await gate(engine, scheduled, at(61)), Stale), "the old head waits again"
    sent_urgent = await dispatch(engine, urgent, at(2))
    after = await finish(engine, sent_urgent, 3, at_=at(3), interval_s=60)
    assert [(r.run_id, r.not_before) for r in after.requests] == [(scheduled.run_id, at(63))]


async def test_execute_now_waits_for_the_active_run(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan(), plan(), interval_s=60)
    assert out is not None
    sent = await dispatch(engine, out.requests[0], T0)
    last = sent.run_id + 2
    now = await tx(engine, lambda c: ledger.execute_now(c, last, now=at(1)))
    assert now.requests == [], "runs of a lane never overlap"
    done = await finish(engine, sent, 3, at_=at(5), interval_s=60)
    assert [(r.run_id, r.not_before) for r in done.requests] == [(last, at(5))]
    with pytest.raises(ledger.Conflict):
        await tx(engine, lambda c: ledger.execute_now(c, sent.run_id, now=at(6)))


async def test_execute_a_failed_run_again(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(lane=None, max_attempts=2))
    assert out is not None
    sent = await dispatch(engine, out.requests[0], T0)
    retry = await finish(engine, sent, 2, at_=at(1), feedback="first")
    sent2 = await dispatch(engine, retry.requests[0], at(1))
    await finish(engine, sent2, 2, at_=at(2), feedback="second")
    assert (await run_row(engine, sent.run_id)).state == "failed"
    again = await tx(engine, lambda c: ledger.execute_failed(c, sent.run_id, now=at(3)))
    [request] = again.requests
    assert (request.attempt, request.not_before) == (3, at(3))
    sent3 = await dispatch(engine, request, at(3))
    await finish(engine, sent3, 3, at_=at(4))
    row = await run_row(engine, sent.run_id)
    assert (row.state, row.attempt) == ("succeeded", 3)
    async with engine.connect() as conn:
        feedbacks = (await conn.scalars(select(Attempt.feedback).order_by(Attempt.attempt))).all()
    assert list(feedbacks) == ["first", "second", ""], "earlier attempts stay visible"
    with pytest.raises(ledger.Conflict, match="only a failed run"):
        await tx(engine, lambda c: ledger.execute_failed(c, sent.run_id, now=at(5)))


async def test_runs_without_a_lane_start_at_once_and_in_parallel(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(lane=None), plan(lane=None), interval_s=60)
    assert out is not None
    assert [r.not_before for r in out.requests] == [T0, T0]
    for request in out.requests:
        await dispatch(engine, request, T0)


async def test_a_run_that_cannot_be_prepared_is_recorded_failed(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(error="command template: 'x' is undefined"), plan())
    assert out is not None
    assert sorted(n.state for n in out.notices) == ["failed", "queued"]
    async with engine.connect() as conn:
        failed = (await conn.execute(select(Run.__table__).where(Run.state == "failed"))).one()
    assert failed.result == 2 and "undefined" in failed.feedback


async def test_check_lanes_repairs_a_lost_request(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan())
    assert out is not None
    lost = out.requests[0]
    quiet = await tx(engine, lambda c: ledger.check_lanes(c, interval_s=0, now=at(5), grace_s=30))
    assert quiet.requests == []
    repaired = await tx(
        engine, lambda c: ledger.check_lanes(c, interval_s=0, now=at(60), grace_s=30)
    )
    [again] = repaired.requests
    assert again.run_id == lost.run_id and again.token == lost.token + 1
    assert isinstance(await gate(engine, lost, at(60)), Stale)
    await dispatch(engine, again, at(60))


async def test_a_new_interval_applies_to_the_next_dispatch(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(lane="a"), plan(lane="a"), plan(lane="b"), interval_s=60)
    assert out is not None
    first_a = next(r for r in out.requests if r.lane == "a")
    sent = await dispatch(engine, first_a, T0)
    done = await finish(engine, sent, 3, at_=at(1), interval_s=60)
    [waiting] = done.requests
    assert waiting.not_before == at(61)
    changed = await tx(engine, lambda c: ledger.apply_interval(c, interval_s=2, now=at(1.5)))
    [again] = changed.requests
    assert (again.run_id, again.not_before) == (waiting.run_id, at(3))
    assert isinstance(await gate(engine, waiting, at(61)), Stale), "the old schedule is void"
    await dispatch(engine, again, at(3))


async def test_a_lost_request_fails_its_run_for_good_and_the_lane_moves_on(
    engine: AsyncEngine,
) -> None:
    out = await enqueue(engine, plan(max_attempts=3), plan())
    assert out is not None
    sent = await dispatch(engine, out.requests[0], T0)
    poison = Lost(sent.run_id, sent.attempt, "handed to executors 6 times")
    lost = (
        await tx(engine, lambda c: ledger.record(c, [], [poison], interval_s=0, now=at(5)))
    ).outbox
    assert [n.state for n in lost.notices] == ["failed"], "no retry for a poison request"
    assert [r.run_id for r in lost.requests] == [sent.run_id + 1]
    row = await run_row(engine, sent.run_id)
    assert row.state == "failed" and "6 times" in row.feedback
    again = (
        await tx(engine, lambda c: ledger.record(c, [], [poison], interval_s=0, now=at(6)))
    ).outbox
    assert again.notices == [] and again.requests == []


async def test_the_reaper_fails_lost_attempts_and_resends_lost_dispatches(
    engine: AsyncEngine,
) -> None:
    out = await enqueue(
        engine, plan(lane="a", timeout_s=10, max_attempts=2), plan(lane="b", timeout_s=10)
    )
    assert out is not None
    running, dispatched = [await dispatch(engine, r, T0) for r in out.requests]
    started = RunStarted(run_id=running.run_id, attempt=1, executor="x9", started_at=at(1))
    await record_started(engine, started, at(1))

    async def reap(now: datetime, idle: bool) -> tuple[Outbox, list[JobRequest]]:
        out = await tx(
            engine,
            lambda c: ledger.reap(
                c,
                now=now,
                interval_s=0,
                running_grace_s=60,
                dispatch_grace_s=60,
                work_queue_idle=idle,
            ),
        )
        return out, out.work

    early, resend = await reap(at(30), True)
    assert early.notices == [] and resend == [], "within the timeout and the grace"
    busy, resend = await reap(at(80), False)
    assert [n.state for n in busy.notices] == ["queued"], "lost attempt 1 is retried"
    assert resend == [], "the work queue is not idle: the request may just be waiting"
    row = await run_row(engine, running.run_id)
    assert row.attempt == 2 and "executor lost" in row.feedback and "x9" in row.feedback
    _, resend = await reap(at(80), True)
    assert [(r.run_id, r.attempt, r.token) for r in resend] == [
        (dispatched.run_id, dispatched.attempt, dispatched.token)
    ]
    assert resend[0].event is not None


async def test_a_redelivered_duplicate_event_resends_its_lanes_unsent_heads(
    engine: AsyncEngine,
) -> None:
    # An event committed by a delivery that died before publishing: its redelivery gets back
    # exactly the requests that were never sent. A plain duplicate gets nothing.
    ev = event()
    out = await enqueue(engine, plan(lane="a"), plan(lane="b"), ev=ev)
    assert out is not None
    assert await enqueue(engine, plan(lane="a"), ev=ev) is None, "a duplicate"
    assert resent == []
    assert await enqueue(engine, plan(lane="a"), ev=ev, redelivered=True) is None
    assert sorted((r.run_id, r.token) for r in resent) == sorted(
        (r.run_id, r.token) for r in out.requests
    )


async def test_a_redelivered_result_resends_the_current_heads(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(lane="a"), plan(lane="a"), plan(lane=None))
    assert out is not None
    by_lane = {r.lane: r for r in out.requests}
    sent = await dispatch(engine, by_lane["a"], T0)
    result = JobResult(
        run_id=sent.run_id,
        attempt=1,
        result=3,
        status="succeeded",
        started_at=at(1),
        finished_at=at(1),
        executor="x1",
    )
    first = await tx(engine, lambda c: ledger.record(c, [], [result], interval_s=0, now=at(1)))
    [head] = first.outbox.requests
    assert head.run_id == sent.run_id + 1

    async def again(redelivered: bool) -> list[JobRequest]:
        done = await tx(
            engine,
            lambda c: ledger.record(
                c, [], [result], interval_s=0, now=at(2), redelivered=[redelivered]
            ),
        )
        assert done.recorded == [False]
        return done.outbox.requests

    assert await again(False) == [], "a plain duplicate changes nothing"
    assert [(r.run_id, r.token) for r in await again(True)] == [(head.run_id, head.token)]
    await dispatch(engine, head, at(1))
    assert await again(True) == [], "a dispatched run is not re-sent"


async def test_a_result_that_changes_nothing_says_why(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(lane=None), interval_s=0)
    assert out is not None
    [request] = out.requests

    def result(run_id: int, attempt: int) -> JobResult:
        return JobResult(
            run_id=run_id,
            attempt=attempt,
            result=3,
            status="succeeded",
            started_at=T0,
            finished_at=T0,
            executor="x1",
        )

    async def reasons(*results: JobResult) -> dict[int, str]:
        done = await tx(engine, lambda c: ledger.record(c, [], results, interval_s=0, now=T0))
        return done.ignored

    assert await reasons(result(request.run_id, 1)) == {0: "not_running"}, "not dispatched yet"
    sent = await dispatch(engine, request, T0)
    both = await reasons(result(sent.run_id, 1), result(sent.run_id, 1))
    assert both == {1: "already_recorded"}, "the first of the batch counts, its copy does not"
    assert await reasons(
        result(sent.run_id, 1), result(sent.run_id, 2), result(sent.run_id + 1000, 1)
    ) == {0: "already_recorded", 1: "future_attempt", 2: "unknown_run"}

"""Cancel (`ledger_cancel`) against the real Postgres: a queued run is removed, an active one
ends Failed at once with its lane moving on, an ended one is refused, and whatever its
executor reports later for the cancelled attempt changes nothing but its Feedback."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from ledger_kit import T0, at, event, plan, tx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.messages import JobRequest, JobResult, RunStarted
from jobmanager.jobs.spec import JobSpec, PlannedRun, Trigger
from jobmanager.store import jobs as job_store
from jobmanager.store import ledger
from jobmanager.store.ledger import Dispatch
from jobmanager.store.models import Attempt, Run
from jobmanager.store.outbox import Outbox

OPS = "key:ops"


async def enqueue(engine: AsyncEngine, *planned: PlannedRun) -> Outbox:
    done = await tx(
        engine, lambda c: ledger.enqueue(c, [(event(), [p]) for p in planned], interval_s=0, now=T0)
    )
    return done.outbox


async def dispatch(engine: AsyncEngine, request: JobRequest, now: datetime = T0) -> JobRequest:
    [decision], _ = await tx(engine, lambda c: ledger.gate(c, [request], now=now, interval_s=0))
    assert isinstance(decision, Dispatch), decision
    return decision.request


async def cancel(engine: AsyncEngine, run_id: int, seconds: float = 2) -> Outbox:
    return await tx(
        engine, lambda c: ledger.cancel(c, run_id, actor=OPS, interval_s=0, now=at(seconds))
    )


async def report(
    engine: AsyncEngine,
    request: JobRequest,
    *,
    started: bool = False,
    code: int = 3,
    feedback: str = "",
    output: str = "",
) -> ledger.Changes:
    """What an executor that did not hear the cancel (or heard it late) reports."""
    starts = [
        RunStarted(run_id=request.run_id, attempt=request.attempt, executor="x1", started_at=at(1))
    ]
    result = JobResult(
        run_id=request.run_id,
        attempt=request.attempt,
        result=code,  # type: ignore[arg-type]
        status="succeeded" if code == 3 else "failed",
        feedback=feedback,
        started_at=at(1),
        finished_at=at(3),
        executor="x1",
        output_tail=output,
    )
    return await tx(
        engine,
        lambda c: ledger.record(
            c, starts if started else [], [] if started else [result], interval_s=0, now=at(3)
        ),
    )


async def run_row(engine: AsyncEngine, run_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(Run.__table__).where(Run.id == run_id))).one()


async def attempts(engine: AsyncEngine, run_id: int) -> list[Any]:
    async with engine.connect() as conn:
        query = select(Attempt.__table__).where(Attempt.run_id == run_id).order_by(Attempt.attempt)
        return list((await conn.execute(query)).all())


async def test_cancelling_a_queued_run_removes_it(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan())
    head = out.requests[0]
    done = await cancel(engine, head.run_id)
    assert [n.state for n in done.notices] == ["removed"] and done.cancels == []
    assert [r.run_id for r in done.requests] == [head.run_id + 1], "the lane moves on"
    assert (await run_row(engine, head.run_id)).state == "removed"


async def test_cancelling_a_running_run_fails_it_at_once_and_the_lane_moves_on(
    engine: AsyncEngine,
) -> None:
    spec = JobSpec(
        name="slow", trigger=Trigger(event_type="channel.*"), script="noop", cancel_grace_s=1.5
    )
    job_id, _ = await tx(engine, lambda c: job_store.upsert(c, spec))
    # Attempts left: a cancel is still final, never retried.
    out = await enqueue(engine, plan(job_id=job_id, max_attempts=3), plan())
    sent = await dispatch(engine, out.requests[0])
    await report(engine, sent, started=True)
    assert (await run_row(engine, sent.run_id)).state == "running"

    done = await cancel(engine, sent.run_id)
    [stop] = done.cancels
    assert (stop.run_id, stop.attempt, stop.by, stop.grace_s) == (sent.run_id, 1, OPS, 1.5)
    assert [(n.run_id, n.state) for n in done.notices] == [(sent.run_id, "failed")]
    assert [r.run_id for r in done.requests] == [sent.run_id + 1], "the lane's next run"
    row = await run_row(engine, sent.run_id)
    assert (row.state, row.result, row.feedback, row.attempt) == (
        "failed",
        2,
        f"cancelled by {OPS}",
        1,
    )
    assert row.finished_at == at(2)
    [attempt] = await attempts(engine, sent.run_id)
    assert (attempt.cancelled_by, attempt.result, attempt.executor) == (OPS, 2, "x1")


async def test_a_dispatched_run_of_a_deleted_job_gets_the_default_grace(
    engine: AsyncEngine,
) -> None:
    out = await enqueue(engine, plan(lane=None))
    sent = await dispatch(engine, out.requests[0])
    [stop] = (await cancel(engine, sent.run_id)).cancels
    assert stop.grace_s == 10
    assert (await run_row(engine, sent.run_id)).state == "failed"


async def test_an_ended_or_unknown_run_is_refused(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan())
    sent = await dispatch(engine, out.requests[0])
    await cancel(engine, sent.run_id)
    with pytest.raises(
        ledger.Conflict, match=r"has already ended \(failed\) and cannot be cancelled"
    ):
        await cancel(engine, sent.run_id)
    with pytest.raises(ledger.RunNotFound, match="does not exist"):
        await cancel(engine, 10**9)


async def test_a_late_result_of_the_cancelled_attempt_is_ignored(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(), plan())
    sent = await dispatch(engine, out.requests[0])
    await cancel(engine, sent.run_id)
    # Its executor never heard the cancel: the script ran to its end and succeeded.
    late = await report(engine, sent, code=3, feedback="all done")
    assert late.recorded == [False]
    assert late.outbox.notices == [] and late.outbox.requests == [] and late.outbox.work == []
    row = await run_row(engine, sent.run_id)
    assert (row.state, row.result, row.feedback) == ("failed", 2, f"cancelled by {OPS}")
    # The lane's next run (requested by the cancel) is untouched by it.
    assert (await run_row(engine, sent.run_id + 1)).state == "queued"


async def test_a_late_start_sends_the_cancel_again(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan())
    sent = await dispatch(engine, out.requests[0])
    await cancel(engine, sent.run_id)
    again = await report(engine, sent, started=True)
    assert [(c.run_id, c.attempt, c.by) for c in again.outbox.cancels] == [(sent.run_id, 1, OPS)]
    assert again.outbox.notices == [], "the run stays failed"
    assert (await run_row(engine, sent.run_id)).state == "failed"


async def test_the_executors_account_of_the_cancel_completes_the_feedback_once(
    engine: AsyncEngine,
) -> None:
    out = await enqueue(engine, plan())
    sent = await dispatch(engine, out.requests[0])
    await cancel(engine, sent.run_id)
    told = f"cancelled by {OPS}; the script ignored SIGTERM and was killed after 1 s"
    await report(engine, sent, code=2, feedback=told, output="tick\n")
    row = await run_row(engine, sent.run_id)
    assert (row.state, row.feedback, row.output_tail) == ("failed", told, "tick\n")
    # A second account (a redelivery) or another script's Feedback changes nothing.
    await report(engine, sent, code=2, feedback=f"cancelled by {OPS}; something else")
    await report(engine, sent, code=3, feedback="exited with code 0")
    [attempt] = await attempts(engine, sent.run_id)
    assert (attempt.feedback, attempt.output_tail) == (told, "tick\n")


async def test_a_cancelled_run_is_executed_again_like_any_failure(engine: AsyncEngine) -> None:
    out = await enqueue(engine, plan(lane=None))
    sent = await dispatch(engine, out.requests[0])
    await cancel(engine, sent.run_id)
    again = await tx(engine, lambda c: ledger.execute_failed(c, sent.run_id, now=at(5)))
    [request] = again.requests
    assert request.attempt == 2
    # The cancelled attempt's late reports touch neither the new attempt nor its run.
    late = await report(engine, sent, started=True)
    assert [c.attempt for c in late.outbox.cancels] == [1]
    await report(engine, sent, code=3)
    row = await run_row(engine, sent.run_id)
    assert (row.state, row.attempt) == ("queued", 2)
    resent = await dispatch(engine, request, at(5))
    assert resent.attempt == 2
    [first, second] = await attempts(engine, sent.run_id)
    assert (first.cancelled_by, second.cancelled_by) == (OPS, None)


async def test_an_unanswered_cancel_is_sent_again_until_answered_or_timed_out(
    engine: AsyncEngine,
) -> None:
    """`ledger_unanswered_cancels`: quiet for 5 s after the cancel (at 2 s), then sent at each
    look until the executor's account comes; never past the attempt's timeout and grace."""
    out = await enqueue(engine, plan(timeout_s=30), plan(timeout_s=30))
    sent = await dispatch(engine, out.requests[0])
    await cancel(engine, sent.run_id)

    async def resent(seconds: float) -> list[tuple[int, int]]:
        outbox = await tx(engine, lambda c: ledger.unanswered_cancels(c, now=at(seconds)))
        return [(c.run_id, c.attempt) for c in outbox.cancels]

    assert await resent(4) == [], "quiet: the broadcast itself may still be on its way"
    assert await resent(8) == [(sent.run_id, 1)]
    assert await resent(20) == [(sent.run_id, 1)]
    assert await resent(2 + 30 + 10 + 1) == [], "past its timeout and grace"
    await report(engine, sent, code=2, feedback=f"cancelled by {OPS}; the script ended on SIGTERM")
    assert await resent(20) == [], "answered"

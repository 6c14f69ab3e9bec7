"""Flow control in the ledger: pause and resume, the circuit breaker, the concurrency limit
(against the real Postgres, one cloned database per test)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pytest
from ledger_kit import T0, at, event, plan, tx
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.messages import JobRequest, JobResult
from jobmanager.jobs.spec import JobSpec, PlannedRun, Trigger
from jobmanager.store import jobs as job_store
from jobmanager.store import ledger
from jobmanager.store.ledger import Conflict, Dispatch, JobNotFound, Stale
from jobmanager.store.models import AuditEntry, Job, Run
from jobmanager.store.outbox import Outbox


async def job(engine: AsyncEngine, name: str, **fields: Any) -> int:
    spec = JobSpec(name=name, trigger=Trigger(event_type="channel.*"), script="noop", **fields)
    job_id, _ = await tx(engine, lambda c: job_store.upsert(c, spec))
    return job_id


def of(job_id: int, name: str, lane: str | None = "L", **kw: Any) -> PlannedRun:
    return plan(lane, job_id=job_id, job_name=name, **kw)


async def enqueue(engine: AsyncEngine, *planned: PlannedRun, now: datetime = T0) -> Outbox:
    done = await tx(
        engine,
        lambda c: ledger.enqueue(c, [(event(), [p]) for p in planned], interval_s=0, now=now),
    )
    return done.outbox


async def gate(
    engine: AsyncEngine, requests: list[JobRequest], now: datetime = T0
) -> tuple[list[Any], Outbox]:
    return await tx(engine, lambda c: ledger.gate(c, requests, now=now, interval_s=0))


async def finish(
    engine: AsyncEngine, request: JobRequest, code: Literal[2, 3], now: datetime
) -> Outbox:
    result = JobResult(
        run_id=request.run_id,
        attempt=request.attempt,
        result=code,
        status="succeeded" if code == 3 else "failed",
        feedback=f"feedback of {request.run_id}",
        started_at=now,
        finished_at=now,
        executor="x1",
    )
    done = await tx(engine, lambda c: ledger.record(c, [], [result], interval_s=0, now=now))
    return done.outbox


async def pause(engine: AsyncEngine, job_id: int, now: datetime = T0) -> Outbox:
    return await tx(
        engine, lambda c: ledger.pause(c, job_id, reason="paused by key:ops", interval_s=0, now=now)
    )


async def resume(engine: AsyncEngine, job_id: int, now: datetime = T0) -> Outbox:
    return await tx(engine, lambda c: ledger.resume(c, job_id, interval_s=0, now=now))


async def states(engine: AsyncEngine) -> dict[int, str]:
    async with engine.connect() as conn:
        return dict((await conn.execute(select(Run.id, Run.state).order_by(Run.id))).all())


async def job_row(engine: AsyncEngine, job_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(Job.__table__).where(Job.id == job_id))).one()


async def dispatch(engine: AsyncEngine, request: JobRequest, now: datetime = T0) -> JobRequest:
    [decision], _ = await gate(engine, [request], now)
    assert isinstance(decision, Dispatch), decision
    return decision.request


# -- pause and resume ---------------------------------------------------------------------------


async def test_a_paused_jobs_runs_wait_while_other_jobs_pass_them_in_the_lane(
    engine: AsyncEngine,
) -> None:
    a, b = await job(engine, "a"), await job(engine, "b")
    out = await pause(engine, a)
    assert [(n.job, n.state, n.reason) for n in out.job_notices] == [
        ("a", "paused", "paused by key:ops")
    ]
    # a, b, a, b into one lane: only b's runs are ever its head.
    first = await enqueue(engine, of(a, "a"), of(b, "b"), of(a, "a"), of(b, "b"))
    [head] = first.requests
    assert head.job.name == "b"
    sent = await dispatch(engine, head)
    [nxt] = (await finish(engine, sent, 3, at(1))).requests
    assert nxt.job.name == "b" and nxt.run_id > sent.run_id
    done = await finish(engine, await dispatch(engine, nxt, at(1)), 3, at(2))
    assert done.requests == [], "nothing but a's runs left: the lane is idle"
    assert list((await states(engine)).values()) == ["queued", "succeeded", "queued", "succeeded"]

    # Resume: a's runs in enqueue order.
    resumed = await resume(engine, a, at(3))
    assert [n.state for n in resumed.job_notices] == ["resumed"]
    [one] = resumed.requests
    assert one.run_id == min(await states(engine))
    [two] = (await finish(engine, await dispatch(engine, one, at(3)), 3, at(4))).requests
    assert two.run_id == one.run_id + 2
    assert (await job_row(engine, a)).paused is False


async def test_pausing_makes_a_scheduled_head_step_aside(engine: AsyncEngine) -> None:
    a, b = await job(engine, "a"), await job(engine, "b")
    [head] = (await enqueue(engine, of(a, "a"), of(b, "b"))).requests
    assert head.job.name == "a"
    out = await pause(engine, a)
    [moved] = out.requests
    assert moved.job.name == "b", "the lane moved on to b's run"
    [old], _ = await gate(engine, [head])
    assert isinstance(old, Stale), "a's request is void"
    await dispatch(engine, moved)
    again = await pause(engine, a)
    assert again.job_notices == [] and again.requests == [], "pausing twice changes nothing"


async def test_a_head_whose_job_was_paused_meanwhile_steps_aside_at_the_gate(
    engine: AsyncEngine,
) -> None:
    a, b = await job(engine, "a"), await job(engine, "b")
    [head] = (await enqueue(engine, of(a, "a"), of(b, "b"))).requests
    async with engine.begin() as conn:  # as the circuit breaker does: the job row only
        await conn.execute(text("UPDATE jobs SET paused = true WHERE id = :a"), {"a": a})
    [decision], moved = await gate(engine, [head])
    assert isinstance(decision, Stale) and decision.reason == "the job is paused"
    assert [r.job.name for r in moved.requests] == ["b"]
    assert (await states(engine))[head.run_id] == "queued"


async def test_runs_without_a_lane_of_a_paused_job_wait_and_come_on_resume(
    engine: AsyncEngine,
) -> None:
    a = await job(engine, "a")
    [before] = (await enqueue(engine, of(a, "a", lane=None))).requests
    await pause(engine, a)
    assert (await enqueue(engine, of(a, "a", lane=None))).requests == []
    [stale], _ = await gate(engine, [before])
    assert isinstance(stale, Stale)
    resumed = await resume(engine, a)
    assert sorted(r.run_id for r in resumed.requests) == sorted(await states(engine))


async def test_execute_now_refuses_a_paused_jobs_run(engine: AsyncEngine) -> None:
    a = await job(engine, "a")
    await pause(engine, a)
    await enqueue(engine, of(a, "a"))
    [run_id] = await states(engine)
    with pytest.raises(Conflict, match="paused"):
        await tx(engine, lambda c: ledger.execute_now(c, run_id, now=T0))
    with pytest.raises(JobNotFound):
        await pause(engine, a + 100)


# -- the circuit breaker ------------------------------------------------------------------------


async def test_the_breaker_pauses_a_job_after_its_failures_in_a_row(engine: AsyncEngine) -> None:
    a = await job(engine, "a", pause_after_failures=3)
    out = await enqueue(engine, *(of(a, "a", lane=f"l{i}") for i in range(5)))
    sent = [await dispatch(engine, r) for r in sorted(out.requests, key=lambda r: r.run_id)]
    # A success resets the count: fail, succeed, then three failures trip it.
    await finish(engine, sent[0], 2, at(1))
    await finish(engine, sent[1], 3, at(2))
    assert (await job_row(engine, a)).failure_streak == 0
    await finish(engine, sent[2], 2, at(3))
    await finish(engine, sent[3], 2, at(4))
    assert not (await job_row(engine, a)).paused
    tripped = await finish(engine, sent[4], 2, at(5))
    [notice] = tripped.job_notices
    assert notice.state == "paused" and "3 failures in a row" in (notice.reason or "")
    assert f"feedback of {sent[4].run_id}" in (notice.reason or "")
    row = await job_row(engine, a)
    assert row.paused and row.paused_reason == notice.reason
    async with engine.connect() as conn:
        audit = (await conn.execute(select(AuditEntry.__table__))).all()
    assert [(r.actor, r.action, r.target) for r in audit] == [("breaker", "jobs.pause", f"job:{a}")]
    # Paused: new runs wait; the resume starts the count again.
    assert (await enqueue(engine, of(a, "a", lane="l9"))).requests == []
    resumed = await resume(engine, a, at(6))
    assert [r.lane for r in resumed.requests] == ["l9"]
    assert (await job_row(engine, a)).failure_streak == 0


async def test_without_the_breaker_failures_pause_nothing(engine: AsyncEngine) -> None:
    a = await job(engine, "a")
    out = await enqueue(engine, *(of(a, "a", lane=f"l{i}") for i in range(4)))
    for request in out.requests:
        assert (await finish(engine, await dispatch(engine, request), 2, at(1))).job_notices == []
    assert not (await job_row(engine, a)).paused


# -- the concurrency limit ------------------------------------------------------------------------


async def test_a_concurrency_limit_holds_runs_and_frees_them_oldest_first(
    engine: AsyncEngine,
) -> None:
    a = await job(engine, "a", max_concurrency=2)
    done = await tx(
        engine,
        lambda c: ledger.enqueue(
            c,
            [(event(), [of(a, "a", lane=f"l{i}")]) for i in range(5)],
            interval_s=0,
            now=T0,
            dispatch=True,
        ),
    )
    assert done.outbox.work == [], "a limited job's runs always go through the gate"
    requests = sorted(done.outbox.requests, key=lambda r: r.run_id)
    decisions, _ = await gate(engine, requests)
    kinds = [type(d).__name__ for d in decisions]
    assert kinds == ["Dispatch", "Dispatch", "Stale", "Stale", "Stale"]
    assert all(
        d.reason == "held by the job's concurrency limit"
        for d in decisions[2:]
        if isinstance(d, Stale)
    )
    # The first to finish frees a slot for the oldest held run, which the gate dispatches.
    first = decisions[0]
    assert isinstance(first, Dispatch)
    freed = await finish(engine, first.request, 3, at(1))
    [again] = [r for r in freed.requests if r.run_id == requests[2].run_id]
    await dispatch(engine, again, at(1))
    # A newer run cannot take a slot ahead of an older held one.
    second = decisions[1]
    assert isinstance(second, Dispatch)
    freed = await finish(engine, second.request, 3, at(2))
    [newest], _ = await gate(engine, [requests[4]], at(2))
    assert isinstance(newest, Stale), "run 4 waits behind the held run 3"
    [oldest] = [r for r in freed.requests if r.run_id == requests[3].run_id]
    await dispatch(engine, oldest, at(2))
    async with engine.connect() as conn:
        active = await conn.scalar(
            text("SELECT count(*) FROM runs WHERE state IN ('dispatched', 'running')")
        )
    assert active == 2


# -- debounce --------------------------------------------------------------------------------


async def runs_of(engine: AsyncEngine, name: str) -> list[Any]:
    async with engine.connect() as conn:
        query = select(Run.__table__).where(Run.job_name == name).order_by(Run.id)
        return list((await conn.execute(query)).all())


async def test_a_burst_in_a_lane_becomes_one_run_with_the_last_command(
    engine: AsyncEngine,
) -> None:
    a = await job(engine, "a", debounce_s=1.5)
    requests: list[JobRequest] = []
    for k in range(10):  # ten events within a second, for two lanes
        out = await enqueue(
            engine,
            of(a, "a", lane="x", command=f"x{k}", debounce_s=1.5),
            of(a, "a", lane="y", command=f"y{k}", debounce_s=1.5),
            now=at(k / 10),
        )
        requests += out.requests
        assert {n.state for n in out.notices} <= {"queued", "superseded"}
    rows = await runs_of(engine, "a")
    survivors = [r for r in rows if r.state == "queued"]
    assert [(r.lane, r.command, r.absorbed) for r in survivors] == [("x", "x9", 9), ("y", "y9", 9)]
    superseded = [r for r in rows if r.state == "superseded"]
    assert len(superseded) == 18
    assert all(r.superseded_by is not None and r.superseded_by > r.id for r in superseded)
    # The lanes' heads are the survivors, due debounce_s after the newest event.
    by_run = {r.run_id: r for r in requests}
    for survivor in survivors:
        assert by_run[survivor.id].not_before == at(0.9 + 1.5)
    # Only the survivors' requests are still valid at the gate.
    decisions, _ = await gate(engine, requests, at(2.4))
    sent = sorted(d.request.command for d in decisions if isinstance(d, Dispatch))
    assert sent == ["x9", "y9"]


async def test_debounce_max_s_starts_a_stream_that_never_pauses(engine: AsyncEngine) -> None:
    a = await job(engine, "a", debounce_s=1.0, debounce_max_s=3.0)
    dispatched: list[tuple[float, str]] = []
    pending: list[JobRequest] = []
    for k in range(20):  # an event every 0.5 s for 10 s
        now = k * 0.5
        out = await enqueue(
            engine, of(a, "a", command=f"c{k}", debounce_s=1.0, debounce_max_s=3.0), now=at(now)
        )
        pending += out.requests
        due = [r for r in pending if r.not_before <= at(now)]
        if due:
            decisions, _ = await gate(engine, due, at(now))
            for d in decisions:
                if isinstance(d, Dispatch):
                    dispatched.append((now, d.request.command))
                    pending += (await finish(engine, d.request, 3, at(now))).requests
            pending = [r for r in pending if r.not_before > at(now)]
    # Each burst runs its newest command 3 s after its first event: the first burst began at
    # 0 s, the second with the first event after that run's dispatch (3.5 s); the third's
    # deadline (10 s) is past the end.
    assert dispatched == [(3.0, "c6"), (6.5, "c13")]


async def test_a_dispatched_run_is_never_superseded(engine: AsyncEngine) -> None:
    a = await job(engine, "a", debounce_s=1.0)
    [first] = (await enqueue(engine, of(a, "a", command="one", debounce_s=1.0))).requests
    await dispatch(engine, first, at(1))
    out = await enqueue(engine, of(a, "a", command="two", debounce_s=1.0), now=at(1.5))
    assert [n.state for n in out.notices] == ["queued"]
    assert [r.state for r in await runs_of(engine, "a")] == ["dispatched", "queued"]

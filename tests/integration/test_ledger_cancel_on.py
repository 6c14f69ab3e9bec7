"""Cancel on a later event (`ledger_cancel_on`, through `ledger_enqueue`) and replay
(`ledger_create`) against the real Postgres: an event ends its job's waiting runs in its
lane, naming itself, whether they came in an earlier batch or earlier in its own; with
`running` it cancels the one on an executor; other jobs and lanes are left alone; and an
event makes one run of a job, ever, however often it is replayed."""

from __future__ import annotations

from typing import Any

from ledger_kit import T0, at, event, plan, tx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.messages import Event, JobRequest, RunStarted
from jobmanager.jobs.spec import JobSpec, PlannedCancel, PlannedRun, Trigger
from jobmanager.store import jobs as job_store
from jobmanager.store import ledger
from jobmanager.store.ledger import Dispatch
from jobmanager.store.models import Event as EventRow
from jobmanager.store.models import Run


async def job(engine: AsyncEngine, name: str) -> int:
    spec = JobSpec(name=name, trigger=Trigger(event_type="channel.*"), script="noop")
    job_id, _ = await tx(engine, lambda c: job_store.upsert(c, spec))
    return job_id


def of(job_id: int, lane: str = "A") -> PlannedRun:
    return plan(lane=lane, job_id=job_id, job_name=f"job-{job_id}")


async def enqueue(
    engine: AsyncEngine,
    steps: list[tuple[Event, list[PlannedRun], list[PlannedCancel]]],
    interval_s: float = 5,
    seconds: float = 0,
) -> ledger.Changes:
    return await tx(
        engine,
        lambda c: ledger.enqueue(
            c,
            [(e, runs) for e, runs, _ in steps],
            cancels=[cancels for _, _, cancels in steps],
            interval_s=interval_s,
            now=at(seconds),
        ),
    )


async def rows(engine: AsyncEngine) -> dict[int, Any]:
    async with engine.connect() as conn:
        found = await conn.execute(select(Run.__table__).order_by(Run.id))
        return {r.id: r for r in found}


async def event_pk(engine: AsyncEngine, e: Event) -> int:
    async with engine.connect() as conn:
        pk = await conn.scalar(select(EventRow.id).where(EventRow.event_id == e.event_id))
    assert pk is not None
    return int(pk)


async def test_an_event_removes_its_jobs_queued_runs_in_its_lane_naming_itself(
    engine: AsyncEngine,
) -> None:
    ipx, other = await job(engine, "ipx"), await job(engine, "other")
    first = await enqueue(
        engine,
        [
            (event(), [of(ipx)], []),
            (event(), [of(ipx)], []),
            (event(), [of(ipx)], []),
            (event(), [of(other)], []),
            (event(), [of(ipx, lane="B")], []),
        ],
    )
    [head] = [r for r in first.outbox.requests if r.lane == "A"]
    removed = event()
    done = await enqueue(engine, [(removed, [], [PlannedCancel(ipx, "A")])], seconds=1)

    runs = await rows(engine)
    pk = await event_pk(engine, removed)
    ended = sorted(n.run_id for n in done.outbox.notices if n.state == "removed")
    assert ended == [head.run_id, head.run_id + 1, head.run_id + 2]
    assert all(runs[i].ended_by_event_pk == pk for i in ended)
    # The other job's run in lane A becomes its head; lane B is not this event's lane.
    [nxt] = done.outbox.requests
    assert nxt.run_id == head.run_id + 3 and nxt.job.id == other
    assert runs[head.run_id + 4].state == "queued"
    assert done.outbox.cancels == []


async def test_a_run_of_the_same_batch_is_ended_only_by_a_later_event(
    engine: AsyncEngine,
) -> None:
    ipx = await job(engine, "ipx")
    before, removed, after = event(), event(), event()
    done = await enqueue(
        engine,
        [
            (before, [of(ipx)], []),
            (removed, [], [PlannedCancel(ipx, "A")]),
            (after, [of(ipx)], []),
        ],
    )
    runs = sorted((await rows(engine)).values(), key=lambda r: r.id)
    assert [(r.event_id, r.state) for r in runs] == [
        (before.event_id, "removed"),
        (after.event_id, "queued"),
    ]
    assert runs[0].ended_by_event_pk == await event_pk(engine, removed)
    assert runs[1].ended_by_event_pk is None
    [request] = done.outbox.requests
    assert request.run_id == runs[1].id, "the survivor is its lane's head"


async def test_with_running_the_run_on_an_executor_is_cancelled_as_by_an_operator(
    engine: AsyncEngine,
) -> None:
    ipx = await job(engine, "ipx")
    first = await enqueue(engine, [(event(), [of(ipx)], []), (event(), [of(ipx)], [])])
    [head] = first.outbox.requests
    [decision], _ = await tx(engine, lambda c: ledger.gate(c, [head], now=T0, interval_s=5))
    assert isinstance(decision, Dispatch)
    sent: JobRequest = decision.request
    started = RunStarted(run_id=sent.run_id, attempt=1, executor="x1", started_at=at(1))
    await tx(engine, lambda c: ledger.record(c, [started], [], interval_s=5, now=at(1)))

    gone = event("gone-1")
    # Without `running`, the running run is left to finish; the queued one is removed.
    done = await enqueue(engine, [(gone, [], [PlannedCancel(ipx, "A", running=False)])], 2)
    assert [(n.run_id, n.state) for n in done.outbox.notices] == [(sent.run_id + 1, "removed")]
    assert (await rows(engine))[sent.run_id].state == "running"

    done = await enqueue(engine, [(event("gone-2"), [], [PlannedCancel(ipx, "A", True)])], 3)
    [stop] = done.outbox.cancels
    assert (stop.run_id, stop.attempt, stop.by) == (
        sent.run_id,
        1,
        "event gone-2 (channel.updated)",
    )
    row = (await rows(engine))[sent.run_id]
    assert (row.state, row.result, row.feedback) == (
        "failed",
        2,
        "cancelled by event gone-2 (channel.updated)",
    )
    assert row.ended_by_event_pk == await event_pk(engine, event("gone-2"))


async def test_a_duplicate_cancelling_event_ends_nothing_new(engine: AsyncEngine) -> None:
    ipx = await job(engine, "ipx")
    removed = event()
    await enqueue(engine, [(removed, [], [PlannedCancel(ipx, "A")])])
    await enqueue(engine, [(event(), [of(ipx)], [])], seconds=1)
    done = await enqueue(engine, [(removed, [], [PlannedCancel(ipx, "A")])], seconds=2)
    assert done.recorded == [False] and done.outbox.notices == []
    assert [r.state for r in (await rows(engine)).values()] == ["queued"]


async def test_replay_creates_one_run_per_event_and_job_ever(engine: AsyncEngine) -> None:
    ipx = await job(engine, "ipx")
    events = [event() for _ in range(3)]
    await enqueue(engine, [(e, [], []) for e in events])
    pks = [await event_pk(engine, e) for e in events]
    planned = [(pk, e.event_id, of(ipx)) for pk, e in zip(pks, events, strict=True)]

    first = await tx(engine, lambda c: ledger.replay(c, planned, interval_s=5, now=at(1)))
    assert first.recorded == [True, True, True]
    assert [n.state for n in first.outbox.notices] == ["queued"] * 3
    assert len(first.outbox.requests) == 1, "one lane, one head"
    again = await tx(engine, lambda c: ledger.replay(c, planned, interval_s=5, now=at(2)))
    assert again.recorded == [False, False, False] and again.outbox.notices == []
    runs = await rows(engine)
    assert sorted(r.event_pk for r in runs.values()) == sorted(pks)

"""Flow control end to end, with the real matcher and executors: a paused job holds its
runs while another job's pass them in the lane; the concurrency limit holds at most that
many runs at once; the circuit breaker pauses a job that keeps failing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import select
from stack import Stack

from jobmanager.jobs.spec import JobSpec
from jobmanager.store import jobs as job_store
from jobmanager.store.models import Job
from jobmanager.testkit.waiting import wait_for


async def _job_id(stack: Stack, spec: JobSpec) -> int:
    async with stack.engine.connect() as conn:
        found = await conn.scalar(select(Job.id).where(Job.name == spec.name))
    assert found is not None
    return int(found)


async def _set_paused(stack: Stack, spec: JobSpec, paused: bool) -> None:
    """What `POST /jobs/{id}/pause` and `/resume` do, published as the admin publishes."""
    job_id = await _job_id(stack, spec)
    now = datetime.now(UTC)
    async with stack.engine.begin() as conn:
        outbox = await job_store.set_paused(
            conn, job_id, paused, actor="key:test", interval_s=0.0, now=now
        )
    await outbox.publish(stack.publisher, now=now)


async def _attempts(stack: Stack, runs: list[Any]) -> list[Any]:
    return [a for run in runs for a in await stack.attempts(run.id)]


async def test_a_paused_job_holds_its_runs_and_the_resume_runs_them_in_order(
    stack: Stack,
) -> None:
    lane = "{{ data.lane }}"
    held = stack.job(script="noop", lane=lane)
    other = stack.job(script="noop", lane=lane)
    await stack.add(held, other)
    await _set_paused(stack, held, True)
    for _ in range(3):
        await stack.publish(held, {"lane": "shared"})
    for _ in range(2):
        await stack.publish(other, {"lane": "shared"})
    await stack.ended(other, 2)  # the other job's runs pass the paused job's in the lane
    await asyncio.sleep(2)
    waiting = await stack.runs(held)
    assert [r.state for r in waiting] == ["queued"] * 3
    assert await _attempts(stack, waiting) == [], "none was dispatched"

    await _set_paused(stack, held, False)
    done = await stack.ended(held, 3)
    assert [r.state for r in done] == ["succeeded"] * 3
    starts = [r.started_at or r.dispatched_at for r in done]
    assert starts == sorted(starts), "in enqueue order"


async def test_a_concurrency_limit_bounds_the_runs_at_once(stack: Stack) -> None:
    job = stack.job(
        script="sleepy", command_template="1", lane="{{ data.lane }}", max_concurrency=2
    )
    await stack.add(job)
    for i in range(8):
        await stack.publish(job, {"lane": f"limited-{i}"})
    runs = await stack.ended(job, 8, timeout=60)
    assert [r.state for r in runs] == ["succeeded"] * 8
    spans = [(a.started_at, a.finished_at) for a in await _attempts(stack, runs)]
    moments = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    at_once = most = 0
    for _, step in moments:
        at_once += step
        most = max(most, at_once)
    assert most == 2, f"{most} runs of the job at once (the limit is 2; 4 slots exist)"


async def test_the_circuit_breaker_pauses_a_failing_job_and_the_resume_runs_the_rest(
    stack: Stack,
) -> None:
    marker = stack.workdir / "downstream-down"
    marker.write_text("down")
    job = stack.job(
        script="downstream", command_template=str(marker), lane="breaker", pause_after_failures=3
    )
    await stack.add(job)
    for _ in range(5):
        await stack.publish(job, {})
    failed = await stack.ended(job, 3)

    async def paused() -> Any:
        async with stack.engine.connect() as conn:
            row = (await conn.execute(select(Job.__table__).where(Job.name == job.name))).one()
        return row if row.paused else None

    row = await wait_for(paused, 10)
    assert "3 failures in a row" in row.paused_reason
    assert "the downstream system is down" in row.paused_reason
    await asyncio.sleep(1)
    runs = await stack.runs(job)
    assert [r.state for r in runs] == ["failed"] * 3 + ["queued"] * 2, failed

    marker.unlink()  # the downstream system is back
    await _set_paused(stack, job, False)
    runs = await stack.ended(job, 5)
    assert [r.state for r in runs] == ["failed"] * 3 + ["succeeded"] * 2
    assert all(a.dispatched_at <= b.dispatched_at for a, b in pairwise(runs[3:]))


async def test_a_debounced_burst_runs_once_with_its_last_command(stack: Stack) -> None:
    job = stack.job(
        script="noop", command_template="{{ data.k }}", lane="{{ data.lane }}", debounce_s=1.5
    )
    await stack.add(job)
    for k in range(10):  # ten events within a second, in two lanes
        await stack.publish(job, {"k": f"x{k}", "lane": "debounce-x"})
        await stack.publish(job, {"k": f"y{k}", "lane": "debounce-y"})
        await asyncio.sleep(0.08)
    last = datetime.now(UTC)

    async def both_ran() -> list[Any] | None:
        rows = await stack.runs(job)
        done = [r for r in rows if r.state == "succeeded"]
        return rows if len(done) >= 2 else None

    rows = await wait_for(both_ran, 20)
    await asyncio.sleep(1)  # nothing else runs after them
    rows = await stack.runs(job)
    ran = sorted((r.lane, r.command) for r in rows if r.state != "superseded")
    assert ran == [("debounce-x", "x9"), ("debounce-y", "y9")]
    assert sum(r.state == "superseded" for r in rows) == 18
    for run in (r for r in rows if r.state == "succeeded"):
        waited = (run.dispatched_at - last).total_seconds()
        assert 1.2 <= waited <= 3.0, f"dispatched {waited:.2f} s after the last event"
        assert run.absorbed == 9

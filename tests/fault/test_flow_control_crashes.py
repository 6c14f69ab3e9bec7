"""Flow control when the matcher dies: a SIGKILL in the middle of debounce windows and in
the middle of a paused job's resume loses nothing and runs nothing twice."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from fault_kit import (
    duplicates,
    events_for,
    kill_and_restart_matcher,
    missing,
    publish_confirmed,
    report,
    settle,
)
from sqlalchemy import func, select
from stack import Stack

from jobmanager.store import jobs as job_store
from jobmanager.store.models import Attempt, Job, Run

pytestmark = pytest.mark.fault


async def _runs_twice(stack: Stack) -> int:
    """Runs with more than one attempt: a script that ran twice (no job here retries)."""
    async with stack.engine.connect() as conn:
        query = select(Attempt.run_id).group_by(Attempt.run_id).having(func.count() > 1)
        return len((await conn.scalars(query)).all())


@pytest.mark.stack(executors=2, concurrency=2)
async def test_matcher_killed_during_debounce_windows_loses_nothing(
    fault_stack: Stack, amqp_url: str
) -> None:
    stack = fault_stack
    job = stack.job(
        script="noop", command_template="{{ data.n }}", lane="{{ data.lane }}", debounce_s=2.0
    )
    await stack.add(job)
    events = events_for(job, 300, lanes=20)
    publishing = asyncio.create_task(publish_confirmed(amqp_url, stack, events))
    await asyncio.sleep(0.5)
    recovery = await kill_and_restart_matcher(stack)
    await publishing
    states = await settle(stack, len(events), timeout=120)
    assert await missing(stack, events, [job]) == 0, "every event has its run"
    assert await duplicates(stack) == 0
    assert await _runs_twice(stack) == 0
    async with stack.engine.connect() as conn:
        ran = Counter((await conn.scalars(select(Run.lane).where(Run.state == "succeeded"))).all())
    assert set(ran) == {f"lane-{n}" for n in range(20)}, "each lane ran"
    assert states.get("superseded", 0) >= len(events) - 2 * 20, states
    report(
        "matcher SIGKILL during debounce windows (300 events, 20 lanes, debounce 2 s)",
        events=len(events),
        executed=sum(ran.values()),
        superseded=states.get("superseded", 0),
        lost=0,
        duplicates=0,
        recovery_s=recovery,
    )


@pytest.mark.stack(executors=2, concurrency=2)
async def test_matcher_killed_during_a_resume_loses_nothing(
    fault_stack: Stack, amqp_url: str
) -> None:
    stack = fault_stack
    job = stack.job(script="sleepy", command_template="0.05", lane="{{ data.lane }}")
    await stack.add(job)
    async with stack.engine.connect() as conn:
        job_id = int(await conn.scalar(select(Job.id).where(Job.name == job.name)) or 0)

    async def set_paused(paused: bool) -> None:
        now = datetime.now(UTC)
        async with stack.engine.begin() as conn:
            outbox = await job_store.set_paused(
                conn, job_id, paused, actor="key:test", interval_s=0.0, now=now
            )
        await outbox.publish(stack.publisher, now=now)

    await set_paused(True)
    events = events_for(job, 200, lanes=10)
    await publish_confirmed(amqp_url, stack, events)

    async def queued() -> int:
        async with stack.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).where(Run.state == "queued")) or 0)

    deadline = time.monotonic() + 60
    while await queued() < len(events):
        assert time.monotonic() < deadline, "the paused job's runs were not all queued"
        await asyncio.sleep(0.2)
    await set_paused(False)
    await asyncio.sleep(0.3)  # the resumed lanes are running
    recovery = await kill_and_restart_matcher(stack)
    states = await settle(stack, len(events), timeout=120)
    assert states == {"succeeded": len(events)}, states
    assert await missing(stack, events, [job]) == 0
    assert await duplicates(stack) == 0
    assert await _runs_twice(stack) == 0
    report(
        "matcher SIGKILL during a paused job's resume (200 runs, 10 lanes)",
        events=len(events),
        lost=0,
        duplicates=0,
        recovery_s=recovery,
    )

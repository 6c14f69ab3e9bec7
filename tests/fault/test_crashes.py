"""Processes that die: executors and matchers killed with SIGKILL, a request that kills its
executor every time, and a graceful SIGTERM in the middle of a script."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from datetime import UTC, datetime

import pytest
from fault_kit import (
    duplicates,
    events_for,
    missing,
    noop,
    publish_confirmed,
    redeliveries,
    report,
    settle,
)
from sqlalchemy import func, select
from stack import Stack

from jobmanager.jobs.spec import PlannedRun
from jobmanager.store import ledger
from jobmanager.store.models import Attempt, Run
from jobmanager.testkit.waiting import wait_for

pytestmark = pytest.mark.fault


@pytest.mark.stack(executors=3, concurrency=2)
async def test_executors_killed_mid_script_lose_nothing(fault_stack: Stack, amqp_url: str) -> None:
    stack = fault_stack
    job = stack.job(script="sleepy", command_template="0.3", lane="{{ data.lane }}")
    await stack.add(job)
    events = events_for(job, 200, lanes=40)
    publishing = asyncio.create_task(publish_confirmed(amqp_url, stack, events))
    kills = 0
    start = time.monotonic()
    rng = random.Random(7)
    while kills < 10:
        await asyncio.sleep(1.0)
        name = f"executor-{rng.randint(1, 3)}"
        stack.processes[name].send_signal(signal.SIGKILL)
        stack.processes[name].wait(10)
        kills += 1
        stack.start(name, "jobmanager.executor", "--concurrency", "2")
    await publishing
    states = await settle(stack, len(events), timeout=120)
    async with stack.engine.connect() as conn:
        lost_feedback = (
            await conn.scalars(select(Run.feedback).where(Run.state == "failed"))
        ).all()
    assert all("executor lost" in f for f in lost_feedback), lost_feedback
    assert await missing(stack, events, [job]) == 0
    assert await duplicates(stack) == 0
    report(
        "executor SIGKILL x10 during 200 runs",
        events=len(events),
        kills=kills,
        succeeded=states.get("succeeded", 0),
        failed=states.get("failed", 0),
        lost=0,
        duplicates=0,
        redeliveries=await redeliveries(stack, "matcher"),
        seconds=round(time.monotonic() - start, 1),
    )


@pytest.mark.stack(executors=2, concurrency=4)
async def test_matcher_killed_and_restarted_twice_loses_nothing(
    fault_stack: Stack, amqp_url: str
) -> None:
    stack = fault_stack
    lanes = noop(stack, lane="{{ data.lane }}")
    # Both jobs match every event: one runs in many lanes, one in the single default lane.
    default = stack.job(script="noop", lane="default", trigger=lanes.trigger.model_dump())
    await stack.add(lanes, default)
    events = events_for(lanes, 3000, lanes=100)
    publishing = asyncio.create_task(publish_confirmed(amqp_url, stack, events))
    start = time.monotonic()
    recoveries = []
    for _ in range(2):
        await asyncio.sleep(1.0)
        stack.processes["matcher"].send_signal(signal.SIGKILL)
        stack.processes["matcher"].wait(10)
        killed = time.monotonic()
        stack.start("matcher", "jobmanager.matcher")
        while stack.log("matcher").count("consuming") < len(recoveries) + 2:
            await asyncio.sleep(0.05)
        recoveries.append(round(time.monotonic() - killed, 2))
    await publishing
    states = await settle(stack, 2 * len(events), timeout=180)
    assert states == {"succeeded": 2 * len(events)}, states
    assert await missing(stack, events, [lanes, default]) == 0
    assert await duplicates(stack) == 0
    # The last matcher was handed what the second kill left unacked: it died mid-stream.
    assert await redeliveries(stack, "matcher") > 0
    report(
        "matcher SIGKILL + restart x2 during 3000 events (2 jobs)",
        events=len(events),
        runs=2 * len(events),
        lost=0,
        duplicates=0,
        redeliveries=await redeliveries(stack, "matcher"),
        recovery_s=recoveries,
        seconds=round(time.monotonic() - start, 1),
    )


@pytest.mark.stack(executors=2, concurrency=1)
async def test_a_request_that_kills_its_executor_fails_after_the_delivery_limit(
    fault_stack: Stack, amqp_url: str
) -> None:
    stack = fault_stack
    job = stack.job(script="poison", command_template="{{ data.command }}", lane=None)
    await stack.add(job)
    good = events_for(job, 1000, data={"command": "fine"})
    poison = [
        *events_for(job, 1, data={"command": "kill-executor"}),
        *events_for(job, 1, data={"command": "exit-worker"}),
    ]
    start = time.monotonic()
    await publish_confirmed(amqp_url, stack, [*good[:500], *poison, *good[500:]])
    restarts = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for name in ("executor-1", "executor-2"):
            if stack.processes[name].poll() is not None:
                restarts += 1
                stack.start(name, "jobmanager.executor", "--concurrency", "1")
        async with stack.engine.connect() as conn:
            waiting = await conn.scalar(
                select(func.count()).where(Run.state.in_(["queued", "dispatched", "running"]))
            )
            total = await conn.scalar(select(func.count()).select_from(Run))
        if total == 1002 and waiting == 0:
            break
        await asyncio.sleep(0.2)
    states = await settle(stack, 1002, timeout=10)
    assert states == {"succeeded": 1000, "failed": 2}, states
    async with stack.engine.connect() as conn:
        failed = {
            r.command: r
            for r in (await conn.execute(select(Run.__table__).where(Run.state == "failed"))).all()
        }
        attempts = await conn.scalar(
            select(func.count())
            .select_from(Attempt)
            .where(Attempt.run_id == failed["kill-executor"].id)
        )
    assert "executor lost" in failed["kill-executor"].feedback
    assert "6 times" in failed["kill-executor"].feedback
    assert "exited unexpectedly" in failed["exit-worker"].feedback
    assert attempts == 1, "one attempt, ended by the delivery limit"
    assert restarts <= 6, f"{restarts} executor restarts: a crash loop"
    report(
        "poison request among 1000 good runs",
        events=1002,
        succeeded=1000,
        failed=2,
        executor_restarts=restarts,
        lost=0,
        duplicates=await duplicates(stack),
        seconds=round(time.monotonic() - start, 1),
    )


@pytest.mark.stack(executors=1, concurrency=1)
async def test_sigterm_lets_the_running_script_finish(fault_stack: Stack) -> None:
    stack = fault_stack
    job = stack.job(script="sleepy", command_template="2", lane=None)
    await stack.add(job)
    await stack.publish(job)

    async def running() -> bool | None:
        rows = await stack.runs(job)
        return True if rows and rows[0].state == "running" else None

    await wait_for(running, 10)
    executor = stack.processes["executor-1"]
    executor.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(executor.wait, 20)
    [run] = await stack.ended(job, 1, timeout=10)
    assert code == 0
    assert (run.state, run.result) == ("succeeded", 3)
    assert len(await stack.attempts(run.id)) == 1
    assert await stack.consumers(stack.topology.work_queue) == 0
    assert await stack.depth(stack.topology.work_queue) == 0, "nothing given back to redeliver"
    report(
        "SIGTERM during a 2 s script", exit_code=code, result=run.result, attempts=1, redelivered=0
    )


@pytest.mark.stack(executors=1, concurrency=1)
async def test_work_lost_after_a_dispatch_at_enqueue_is_sent_again(fault_stack: Stack) -> None:
    """What a matcher leaves when it dies after committing an enqueue that dispatched its run
    at once (JOBMANAGER_DIRECT_DISPATCH) and before publishing the work: the reaper sends
    the work again once the dispatch grace (5 s here) has passed, and the script runs once."""
    stack = fault_stack
    job = noop(stack, lane="{{ data.lane }}")
    await stack.add(job)
    [event] = events_for(job, 1)
    planned = PlannedRun(
        job_id=None, job_name=job.name, script="noop", command="lost", lane="lane-0"
    )
    committed = time.monotonic()
    async with stack.engine.begin() as conn:
        now = datetime.now(UTC)
        done = await ledger.enqueue(
            conn, [(event, [planned])], interval_s=0, now=now, dispatch=True
        )
    [work] = done.outbox.work  # dispatched in the enqueue's transaction, as the matcher does
    # The work is never published, as if the process had died right after the commit.
    [run] = await stack.ended(job, 1, timeout=30)
    waited = time.monotonic() - committed
    assert (run.id, run.state) == (work.run_id, "succeeded")
    assert waited >= 5, "re-sent only after the grace"
    assert len(await stack.attempts(run.id)) == 1
    started = stack.log("executor-1").count(f"run {run.id} attempt 1: noop started")
    assert started == 1, f"the script ran {started} times"
    assert await duplicates(stack) == 0
    report(
        "work lost between a dispatch at enqueue and its publish",
        runs=1,
        lost=0,
        duplicates=0,
        script_runs=started,
        recovery_s=round(waited, 1),
    )

"""Cancel when the executor dies: an executor SIGKILLed during a cancelled script's grace
loses nothing and runs nothing twice. Its script dies with it (parent-death signal), the
broker hands the request to the other executor, which heard the cancel and acks it without
running it; the run stays Failed with the cancel's Feedback and its lane moves on once."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fault_kit import report
from sqlalchemy import select
from stack import Stack

from jobmanager.store import ledger
from jobmanager.store.models import Attempt, Run
from jobmanager.testkit.waiting import wait_for

pytestmark = pytest.mark.fault

BY = "key:fault"


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def _run(stack: Stack, run_id: int) -> Any:
    async with stack.engine.connect() as conn:
        return (await conn.execute(select(Run.__table__).where(Run.id == run_id))).one()


@pytest.mark.stack(executors=2, concurrency=2)
async def test_executor_killed_during_a_cancel_loses_nothing_and_runs_nothing_twice(
    fault_stack: Stack, tmp_path: Path
) -> None:
    stack = fault_stack
    lane = f"cancel-{uuid.uuid4().hex[:6]}"
    pid_file = tmp_path / "stubborn.pid"
    # It ignores SIGTERM: the executor is killed while it waits out the grace.
    slow = stack.job(
        script="stubborn",
        command_template=str(pid_file),
        lane="{{ data.lane }}",
        cancel_grace_s=30,
    )
    after = stack.job(script="noop", lane="{{ data.lane }}")
    await stack.add(slow, after)
    await stack.publish(slow, {"lane": lane})
    await stack.publish(after, {"lane": lane})

    async def running() -> Any:
        runs = await stack.runs(slow)
        ready = runs and runs[0].state == "running" and pid_file.exists() and pid_file.read_text()
        return runs[0] if ready else None

    run = await wait_for(running, 15, what="the stubborn script running")
    script = int(pid_file.read_text())
    holder = next(
        name
        for name in ("executor-1", "executor-2")
        if stack.processes[name].pid == _parent(script)
    )
    other = "executor-2" if holder == "executor-1" else "executor-1"

    now = datetime.now(UTC)
    async with stack.engine.begin() as conn:
        outbox = await ledger.cancel(conn, run.id, actor=BY, interval_s=0.0, now=now)
    await outbox.publish(stack.publisher, now=now)
    await asyncio.sleep(0.5)  # SIGTERM sent and ignored: the grace runs
    stack.processes[holder].send_signal(signal.SIGKILL)
    stack.processes[holder].wait(10)
    killed = time.monotonic()

    async def dropped() -> bool | None:
        return True if "before it started here; not run" in stack.log(other) else None

    await wait_for(dropped, 30, what=f"{other} to drop the redelivered request")
    recovery = round(time.monotonic() - killed, 2)
    [next_run] = await stack.ended(after, 1)
    await asyncio.sleep(1)
    assert next_run.state == "succeeded"
    assert int(pid_file.read_text()) == script, "the script never started again"
    row = await _run(stack, run.id)
    assert (row.state, row.result, row.feedback) == ("failed", 2, f"cancelled by {BY}")
    async with stack.engine.connect() as conn:
        attempts = (
            await conn.scalars(select(Attempt.attempt).where(Attempt.run_id == run.id))
        ).all()
    assert list(attempts) == [1], "no retry, no second attempt"
    assert len(await stack.runs(after)) == 1 and await stack.depth(stack.topology.work_queue) == 0
    report(
        "executor SIGKILL during a cancel's grace",
        lost=0,
        duplicates=0,
        recovery_s=recovery,
    )

"""Cancel end to end, with the real matcher and executor processes: the cancel reaches the
executor that runs the script, SIGTERM ends its process group at once (SIGKILL after the
job's grace for a script that ignores SIGTERM), the run is Failed with the cancel's Feedback
and its lane's next run starts; a request cancelled while it waited in the work queue is
never run. The cancel is made as `POST /queue/{id}/cancel` makes it: the ledger's function,
its outbox published after commit."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from cancel_kit import BY, alive, cancel, gone_after, run_row
from stack import Stack

from jobmanager.testkit.waiting import wait_for


async def _running(stack: Stack, spec: Any, pid_file: Path) -> tuple[Any, int]:
    """The job's one run once it is running and its script has recorded its pid."""

    async def started() -> tuple[Any, int] | None:
        runs = await stack.runs(spec)
        if runs and runs[0].state == "running" and pid_file.exists() and pid_file.read_text():
            return runs[0], int(pid_file.read_text())
        return None

    return await wait_for(started, 15, what=f"{spec.name} running")


async def _feedback(stack: Stack, run_id: int, ending: str) -> Any:
    async def told() -> Any:
        row = await run_row(stack, run_id)
        return row if row.feedback.endswith(ending) else None

    return await wait_for(told, 10, what=f"the executor's account of run {run_id}'s cancel")


async def test_a_cancelled_script_ends_on_sigterm_and_its_lane_moves_on(
    stack: Stack, tmp_path: Path
) -> None:
    lane = f"cancel-{uuid.uuid4().hex[:6]}"
    pid_file = tmp_path / "linger.pid"
    slow = stack.job(script="linger", command_template=str(pid_file), lane="{{ data.lane }}")
    after = stack.job(script="noop", lane="{{ data.lane }}")
    await stack.add(slow, after)
    await stack.publish(slow, {"lane": lane})
    await stack.publish(after, {"lane": lane})
    run, group = await _running(stack, slow, pid_file)
    assert [r.state for r in await stack.runs(after)] == ["queued"], "it waits for the lane"

    await cancel(stack, run.id)
    assert await gone_after(group, 1.0) < 1.0
    row = await run_row(stack, run.id)
    assert (row.state, row.result) == ("failed", 2) and row.feedback.startswith(
        f"cancelled by {BY}"
    )
    [next_run] = await stack.ended(after, 1)
    assert next_run.state == "succeeded", "the lane's next run ran"
    row = await _feedback(stack, run.id, "the script ended on SIGTERM")
    assert row.feedback == f"cancelled by {BY}; the script ended on SIGTERM"
    assert (row.state, row.attempt) == ("failed", 1), "no retry"


async def test_a_script_that_ignores_sigterm_is_killed_after_the_grace(
    stack: Stack, tmp_path: Path
) -> None:
    pid_file = tmp_path / "stubborn.pid"
    spec = stack.job(script="stubborn", command_template=str(pid_file), lane=None, cancel_grace_s=1)
    await stack.add(spec)
    await stack.publish(spec)
    run, group = await _running(stack, spec, pid_file)
    await cancel(stack, run.id)
    await asyncio.sleep(0.6)
    assert alive(group), "SIGTERM is ignored: the grace runs"
    assert 0.2 < await gone_after(group, 1.5)
    row = await _feedback(stack, run.id, "was killed (SIGKILL)")
    assert row.feedback == (
        f"cancelled by {BY}; the script was still running 1.0 s after SIGTERM "
        "and was killed (SIGKILL)"
    )


async def test_a_python_script_is_stopped_and_its_worker_replaced(stack: Stack) -> None:
    spec = stack.job(script="sleepy", command_template="60", lane=None)
    quick = stack.job(script="sleepy", command_template="0", lane=None)
    await stack.add(spec, quick)
    await stack.publish(spec)

    async def running() -> Any:
        runs = await stack.runs(spec)
        return runs[0] if runs and runs[0].state == "running" else None

    run = await wait_for(running, 15, what="the Python script running")
    started = time.monotonic()
    await cancel(stack, run.id)
    row = await _feedback(stack, run.id, "the script ended on SIGTERM")
    assert time.monotonic() - started < 3, "not the 60 s of the script"
    assert row.state == "failed"
    for _ in range(4):  # more than the executors' slots: the killed worker was replaced
        await stack.publish(quick)
    assert [r.state for r in await stack.ended(quick, 4)] == ["succeeded"] * 4


async def _fifth_waits(stack: Stack, tmp_path: Path, never: Path) -> tuple[list[Any], Any]:
    """Two executors of two slots each: four lingering scripts take every slot, and a fifth
    request waits in the work queue, dispatched. The four runs and the fifth."""
    busy = stack.job(script="linger", command_template=f"{tmp_path}/{{{{ data.n }}}}", lane=None)
    waiting = stack.job(script="linger", command_template=str(never), lane=None)
    await stack.add(busy, waiting)
    for n in range(4):
        await stack.publish(busy, {"n": n})

    async def all_running() -> list[Any] | None:
        runs = await stack.runs(busy)
        return runs if len(runs) == 4 and {r.state for r in runs} == {"running"} else None

    holding = await wait_for(all_running, 15, what="four scripts running")
    await stack.publish(waiting)

    async def dispatched() -> Any:
        runs = await stack.runs(waiting)
        return runs[0] if runs and runs[0].state == "dispatched" else None

    return holding, await wait_for(dispatched, 10, what="the fifth run dispatched")


async def test_a_request_cancelled_while_it_waits_in_the_work_queue_never_runs(
    stack: Stack, tmp_path: Path
) -> None:
    holding, parked = await _fifth_waits(stack, tmp_path, tmp_path / "never")
    await cancel(stack, parked.id)
    for run in holding:
        await cancel(stack, run.id)
    await wait_for(
        lambda: _some(
            stack.log("executor-1").count("before it started here; not run")
            + stack.log("executor-2").count("before it started here; not run")
        ),
        10,
        what="an executor to drop the cancelled request",
    )
    await asyncio.sleep(0.5)
    assert not (tmp_path / "never").exists(), "its script never ran"
    row = await run_row(stack, parked.id)
    # No executor reported it: neither a start nor an account of how it ended.
    assert (row.state, row.executor, row.feedback) == ("failed", "unknown", f"cancelled by {BY}")
    assert await stack.depth(stack.topology.work_queue) == 0


async def _some(count: int) -> int | None:
    return count or None


async def test_a_cancel_no_executor_heard_is_sent_again_when_the_script_starts(
    stack: Stack, tmp_path: Path
) -> None:
    """The window: an executor that connected after the broadcast (here: a broadcast nobody
    heard) starts the script, and its start report makes the matcher send the cancel again."""
    never = tmp_path / "late"
    holding, parked = await _fifth_waits(stack, tmp_path, never)
    await cancel(stack, parked.id, broadcast=False)
    for run in holding:
        await cancel(stack, run.id)
    group = await wait_for(
        lambda: _some(int(never.read_text() or 0) if never.exists() else 0),
        10,
        what="the unheard cancel's script to start",
    )
    assert await gone_after(group, 2.0) < 2.0, "stopped once its start was reported"
    row = await _feedback(stack, parked.id, "the script ended on SIGTERM")
    assert (row.state, row.result) == ("failed", 2)


async def test_a_lost_cancel_of_a_running_script_is_sent_again_by_the_upkeep(
    stack: Stack, tmp_path: Path
) -> None:
    """A cancel whose broadcast was lost after its commit (the script started before it, so
    no start report will send it again): the matcher's upkeep sends it again, and the script
    stops within one lane check (10 s) of the cancel's quiet time (5 s)."""
    pid_file = tmp_path / "linger.pid"
    spec = stack.job(script="linger", command_template=str(pid_file), lane=None)
    await stack.add(spec)
    await stack.publish(spec)
    run, group = await _running(stack, spec, pid_file)
    await cancel(stack, run.id, broadcast=False)
    await asyncio.sleep(2)
    assert alive(group), "no executor heard the cancel"
    assert await gone_after(group, 16) > 1
    row = await _feedback(stack, run.id, "the script ended on SIGTERM")
    assert row.feedback == f"cancelled by {BY}; the script ended on SIGTERM"

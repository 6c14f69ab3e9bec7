"""An executor in another language: `examples/executor-node` (Node.js, amqplib) is the only
executor of a stack with the real matcher, broker and database, and no Python executor. What
SPEC §3 promises (anything that speaks the AMQP contract can be an executor) is checked
end to end: its catalogue reaches the ledger, runs succeed and fail as its scripts say, in
lane order and once each, a timeout kills the script's process group, and a cancel stops a
running script and completes the run's Feedback.

Node and npm come from Debian's packages (`.ci/run` installs them); `npm ci` installs the
locked amqplib the first time. Without Node the tests are skipped on a laptop and fail under
CI=true.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cancel_kit import BY, alive, cancel, gone_after, run_row
from sqlalchemy import select
from stack import ROOT, Stack, running_stack

from jobmanager.store.models import Executor
from jobmanager.testkit.waiting import wait_for

EXAMPLE = ROOT / "examples" / "executor-node"
SCRIPTS = Path(__file__).resolve().parent / "node_scripts"
EXECUTOR = f"node-{uuid.uuid4().hex[:6]}"


def _node() -> str:
    """The node program, with the example's locked packages installed; skips (fails under
    CI=true) without Node.js."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "Node.js is not installed (apt-get install nodejs npm)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    if not (EXAMPLE / "node_modules" / "amqplib").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--prefix", str(EXAMPLE), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}{installed.stderr}"
    return node


@pytest.fixture(scope="module")
async def stack(
    amqp_url: str,
    postgres_url: str,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    node = _node()
    workdir = tmp_path_factory.mktemp("node-stack")
    async with running_stack(
        amqp_url, postgres_url, template_database, workdir, executors=0
    ) as running:
        scripts = workdir / "node-scripts"
        shutil.copytree(SCRIPTS, scripts)
        running.start_command(
            "executor-node",
            [node, str(EXAMPLE / "index.js")],
            env={
                "JOBMANAGER_SCRIPTS_DIR": str(scripts),
                "JOBMANAGER_CONCURRENCY": "2",
                "JOBMANAGER_EXECUTOR_ID": EXECUTOR,
            },
        )

        async def consuming() -> bool | None:
            return True if await running.consumers(running.topology.work_queue) == 1 else None

        await wait_for(consuming, 30, what="the Node executor", alive=running.processes.check_alive)
        yield running


async def test_its_catalogue_reaches_the_ledger_and_it_is_the_only_executor(stack: Stack) -> None:
    assert stack.executors == [], "no Python executor in this stack"

    async def reported() -> Any:
        async with stack.engine.connect() as conn:
            rows = (await conn.execute(select(Executor.__table__))).all()
        return rows or None

    [row] = await wait_for(reported, 10, what="the Node executor's report")
    assert row.id == EXECUTOR
    assert row.scripts == ["node_fail", "node_ok", "node_sleep"]
    assert (row.concurrency, row.busy) == (2, 0)


async def test_twenty_events_run_as_their_scripts_say_in_lane_order_once_each(
    stack: Stack, tmp_path: Path
) -> None:
    tally = tmp_path / "tally"
    command = f"{tally} {{{{ data.n }}}}"
    ok = stack.job(script="node_ok", command_template=command, lane="{{ data.lane }}")
    bad = stack.job(script="node_fail", command_template=command, lane="{{ data.lane }}")
    await stack.add(ok, bad)
    prefix = uuid.uuid4().hex[:6]
    for n in range(20):
        await stack.publish(bad if n % 5 == 4 else ok, {"n": n, "lane": f"{prefix}-{n % 3}"})
    runs = await stack.ended(ok, 16) + await stack.ended(bad, 4)

    for run in runs:
        n = int(run.command.rsplit(" ", 1)[1])
        assert run.executor == EXECUTOR and run.attempt == 1
        if run.script == "node_ok":
            assert (run.state, run.result, run.feedback) == ("succeeded", 3, "")
            assert run.output_tail == f"ok {n}", "stdout is the output tail"
        elif n % 2 == 0:
            assert (run.state, run.result) == ("failed", 2)
            assert run.feedback == f"node_fail says no to {n}", "the result line decides"
        else:
            assert (run.state, run.result) == ("failed", 2)
            assert run.feedback == f"node_fail exited with code 4: bad input {n}"
            assert run.output_tail == f"[stderr]\nbad input {n}"

    executed = [int(line.split()[0]) for line in tally.read_text().splitlines()]
    assert sorted(executed) == sorted(r.id for r in runs), "each run executed exactly once"
    for lane in {r.lane for r in runs}:
        in_lane = sorted((r for r in runs if r.lane == lane), key=lambda r: r.id)
        assert [i for i in executed if i in {r.id for r in in_lane}] == [r.id for r in in_lane]
        for before, after in itertools.pairwise(in_lane):
            assert before.finished_at <= after.started_at, f"lane {lane}: runs overlapped"


async def test_a_script_past_its_timeout_is_killed_with_its_children(
    stack: Stack, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleep.pid"
    spec = stack.job(
        script="node_sleep", command_template=f"{pid_file} 30", timeout_s=1.0, lane=None
    )
    await stack.add(spec)
    started = time.monotonic()
    await stack.publish(spec)
    [run] = await stack.ended(spec, 1, timeout=15)
    assert time.monotonic() - started < 10, "not the 30 s of the script"
    assert (run.state, run.result) == ("failed", 2)
    assert run.feedback == "timed out after 1.0 s; the script and its child processes were killed"
    assert not alive(int(pid_file.read_text())), "its process group is gone"


async def test_a_cancelled_script_ends_on_sigterm_and_the_run_tells_so(
    stack: Stack, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleep.pid"
    spec = stack.job(script="node_sleep", command_template=f"{pid_file} 60", lane=None)
    await stack.add(spec)
    await stack.publish(spec)

    async def running() -> tuple[Any, int] | None:
        runs = await stack.runs(spec)
        if runs and runs[0].state == "running" and pid_file.exists() and pid_file.read_text():
            return runs[0], int(pid_file.read_text())
        return None

    run, group = await wait_for(running, 15, what="node_sleep running")
    assert run.executor == EXECUTOR, "run.started came from the Node executor"
    await cancel(stack, run.id)
    assert await gone_after(group, 1.0) < 1.0

    async def told() -> Any:
        row = await run_row(stack, run.id)
        return row if row.feedback != f"cancelled by {BY}" else None

    row = await wait_for(told, 10, what="the Node executor's account of the cancel")
    assert (row.state, row.result, row.attempt) == ("failed", 2, 1)
    assert row.feedback == f"cancelled by {BY}; the script ended on SIGTERM"


async def test_an_unknown_script_fails_with_the_known_ones_named(stack: Stack) -> None:
    spec = stack.job(script="not_here", lane=None)
    await stack.add(spec)  # stored directly: the admin API would refuse it
    await stack.publish(spec)
    [run] = await stack.ended(spec, 1)
    assert (run.state, run.result, run.executor) == ("failed", 2, EXECUTOR)
    assert run.feedback.startswith("unknown script 'not_here': not in the scripts directory ")
    assert run.feedback.endswith("; known scripts: node_fail, node_ok, node_sleep")


async def test_a_request_cancelled_while_it_waits_in_the_work_queue_never_runs(
    stack: Stack, tmp_path: Path
) -> None:
    busy = stack.job(
        script="node_sleep", command_template=f"{tmp_path}/{{{{ data.n }}}} 60", lane=None
    )
    never = tmp_path / "never"
    waiting = stack.job(script="node_sleep", command_template=f"{never} 60", lane=None)
    await stack.add(busy, waiting)
    for n in range(2):  # the executor's two slots (and its prefetch of two)
        await stack.publish(busy, {"n": n})

    async def both_running() -> list[Any] | None:
        runs = await stack.runs(busy)
        return runs if len(runs) == 2 and {r.state for r in runs} == {"running"} else None

    holding = await wait_for(both_running, 15, what="two scripts running")
    await stack.publish(waiting)

    async def dispatched() -> Any:
        runs = await stack.runs(waiting)
        return runs[0] if runs and runs[0].state == "dispatched" else None

    parked = await wait_for(dispatched, 10, what="the third run dispatched")
    await cancel(stack, parked.id)
    for run in holding:
        await cancel(stack, run.id)

    async def dropped() -> bool | None:
        return True if "before it started here; not run" in stack.log("executor-node") else None

    await wait_for(dropped, 10, what="the Node executor to drop the cancelled request")
    assert not never.exists(), "its script never ran"
    row = await run_row(stack, parked.id)
    assert (row.state, row.executor, row.feedback) == ("failed", "unknown", f"cancelled by {BY}")
    assert await stack.depth(stack.topology.work_queue) == 0

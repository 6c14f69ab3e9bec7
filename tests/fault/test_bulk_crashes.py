"""A bulk action when the matcher dies: 200 failed runs executed again at once, as `POST
/failed/execute` does (one ledger call, its requests published after commit), with the
matcher SIGKILLed while its gate works through them. Nothing is lost and nothing runs twice:
each run gets exactly one more attempt, and its script runs exactly once for it."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fault_kit import (
    duplicates,
    events_for,
    kill_and_restart_matcher,
    publish_confirmed,
    report,
    settle,
)
from sqlalchemy import select
from stack import Stack

from jobmanager.store import ledger
from jobmanager.store.models import Run

pytestmark = pytest.mark.fault

RUNS = 200


@pytest.mark.stack(executors=2, concurrency=2)
async def test_matcher_killed_during_a_bulk_execute_loses_nothing_and_runs_nothing_twice(
    fault_stack: Stack, amqp_url: str, tmp_path: Path
) -> None:
    stack = fault_stack
    tally = tmp_path / "tally"
    down = Path(f"{tally}.down")
    down.touch()
    job = stack.job(script="tally", command_template=str(tally), lane="{{ data.lane }}")
    await stack.add(job)
    await publish_confirmed(amqp_url, stack, events_for(job, RUNS, lanes=20))
    assert await settle(stack, RUNS, timeout=120) == {"failed": RUNS}

    down.unlink()  # the downstream system is back: the operator executes them all again
    async with stack.engine.connect() as conn:
        ids = list((await conn.scalars(select(Run.id).where(Run.state == "failed"))).all())
    now = datetime.now(UTC)
    async with stack.engine.begin() as conn:
        acted = await ledger.execute_failed_runs(conn, ids, now=now)
    assert acted.refused == {}
    await acted.outbox.publish(stack.publisher, now=now)
    await asyncio.sleep(0.2)  # the gate is dispatching them
    async with stack.engine.connect() as conn:
        waiting = len((await conn.scalars(select(Run.id).where(Run.state == "queued"))).all())
    recovery = await kill_and_restart_matcher(stack)
    assert waiting > 0, "the matcher was killed in the middle of the bulk action's runs"

    assert await settle(stack, RUNS, timeout=120) == {"succeeded": RUNS}
    await asyncio.sleep(1)  # anything run twice would have written its line by now
    executions = Counter(tally.read_text().split("\n")[:-1])
    assert sum(executions.values()) == 2 * RUNS, "each run: its failure and its one re-run"
    assert set(executions.values()) == {1}, "no (run, attempt) ran twice"
    async with stack.engine.connect() as conn:
        attempts = set((await conn.scalars(select(Run.attempt))).all())
    assert attempts == {2}
    assert await duplicates(stack) == 0
    report(
        f"matcher SIGKILL during a bulk Execute of {RUNS} failed runs (20 lanes)",
        runs=RUNS,
        queued_at_kill=waiting,
        lost=0,
        duplicates=0,
        recovery_s=recovery,
    )

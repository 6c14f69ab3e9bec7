"""What the matcher does with results no honest executor sends: it bounds them, parks the
inconsistent ones with the reason, and counts and logs the ones that change nothing."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from stack import Stack

from jobmanager.core.messages import MAX_FEEDBACK, MAX_OUTPUT_TAIL, MAX_RESULT_BYTES
from jobmanager.store.models import Run
from jobmanager.testkit.waiting import wait_for


def forged(run_id: int, attempt: int, **fields: Any) -> bytes:
    """A result's body as anyone with the broker's credentials could send it."""
    now = datetime.now(UTC).isoformat()
    values: dict[str, Any] = {
        "run_id": run_id,
        "attempt": attempt,
        "result": 2,
        "status": "failed",
        "started_at": now,
        "finished_at": now,
        "executor": "forger",
        **fields,
    }
    return json.dumps(values).encode()


async def send(stack: Stack, routing_key: str, body: bytes) -> None:
    await stack.publisher.publish_raw(stack.topology.results_exchange, routing_key, body)


async def run_row(stack: Stack, run_id: int) -> Any:
    async with stack.engine.connect() as conn:
        return (await conn.execute(select(Run.__table__).where(Run.id == run_id))).one()


async def parked_reasons(stack: Stack) -> list[str]:
    channel = await stack.connection.channel()
    dead = await channel.get_queue(stack.topology.dead_queue)
    reasons = []
    while (message := await dead.get(fail=False)) is not None:
        reasons.append(str((message.headers or {}).get("x-jobmanager-error")))
        await message.ack()
    await channel.close()
    return reasons


async def ignored(stack: Stack) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{stack.metrics['matcher']}/metrics")).text
    found = re.findall(r'^jobmanager_results_ignored_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    return {reason: float(value) for reason, value in found}


async def running_run(stack: Stack) -> Any:
    job = stack.job(script="sleepy", command_template="3", lane=None)
    await stack.add(job)
    await stack.publish(job)

    async def running() -> Any:
        rows = await stack.runs(job)
        return rows[0] if rows and rows[0].state == "running" else None

    return await wait_for(running, 15, what="a running run")


async def test_a_long_result_is_stored_cut_a_huge_one_parked_the_real_one_ignored(
    stack: Stack,
) -> None:
    run = await running_run(stack)
    before = await ignored(stack)
    await parked_reasons(stack)  # an empty dead queue: what follows is this test's
    await send(stack, "run.failed", forged(run.id, 1, feedback="f" * MAX_RESULT_BYTES))
    # Within the message limit, beyond what the ledger keeps of either text.
    huge = forged(run.id, 1, feedback="f" * 400_000, output_tail="o" * 400_000)
    await send(stack, "run.failed", huge)

    async def recorded() -> Any:
        row = await run_row(stack, run.id)
        return row if row.state == "failed" else None

    row = await wait_for(recorded, 10, what="the forged result recorded")
    assert len(row.feedback) <= MAX_FEEDBACK and row.feedback.endswith("characters omitted]")
    assert len(row.output_tail) <= MAX_OUTPUT_TAIL and row.output_tail.startswith("[… ")

    async def the_real_one_ignored() -> bool | None:
        now = await ignored(stack)
        return True if now.get("already_recorded", 0) > before.get("already_recorded", 0) else None

    # The script finishes 3 s after it started; its honest result comes too late.
    assert await wait_for(the_real_one_ignored, 10, what="the executor's result ignored")
    after = await run_row(stack, run.id)
    assert (after.state, after.feedback) == ("failed", row.feedback)
    [too_large] = await parked_reasons(stack)
    assert too_large.startswith("too large: 1048") and too_large.endswith("(limit 1048576)")


async def test_results_that_change_nothing_are_counted_by_reason(stack: Stack) -> None:
    job = stack.job(script="noop", lane=None)
    await stack.add(job)
    await stack.publish(job)
    [run] = await stack.ended(job, 1)
    before = await ignored(stack)
    for body in (forged(2**62, 1), forged(run.id, 5), forged(run.id, 1)):
        await send(stack, "run.failed", body)
    want = {"unknown_run": 1, "future_attempt": 1, "already_recorded": 1}

    async def counted() -> dict[str, float] | None:
        now = await ignored(stack)
        deltas = {reason: now.get(reason, 0) - before.get(reason, 0) for reason in want}
        return deltas if deltas == want else None

    assert await wait_for(counted, 10, what="three ignored results counted") == want
    [again] = await stack.runs(job)
    assert (again.state, again.result) == ("succeeded", 3)


async def test_a_result_whose_routing_key_contradicts_its_body_is_parked(stack: Stack) -> None:
    run = await running_run(stack)
    await parked_reasons(stack)  # an empty dead queue: what follows is this test's
    await send(stack, "run.failed", forged(run.id, 1, result=3, status="succeeded"))
    await send(stack, "run.succeeded", forged(run.id, 1, result=2, status="succeeded"))
    reasons: list[str] = []

    async def both_parked() -> bool | None:
        reasons.extend(await parked_reasons(stack))
        return True if len(reasons) >= 2 else None

    await wait_for(both_parked, 10, what="two results parked")
    assert sorted(reasons) == [
        "inconsistent result: routing key run.failed but result 3 (succeeded)",
        "invalid run.succeeded message: Value error, result 2 contradicts status 'succeeded'",
    ], reasons
    await asyncio.sleep(0.3)
    row = await run_row(stack, run.id)
    assert row.state == "running", "neither outcome was recorded"
    assert stack.processes["matcher"].poll() is None

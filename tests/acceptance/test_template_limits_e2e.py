"""Runaway templates against the real matcher (a process of its own, with its render workers):
a nested loop and a memory bomb fail their runs with Feedback naming the limit, while the
events of a normal job beside them are not delayed by more than about the limit, and the
matcher's memory stays where it was. An event whose renders kill every worker is parked.

The stack is this module's own (the events consumer is one per stack, and these tests hold it
busy on purpose).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from stack import Stack, running_stack

from jobmanager.testkit.waiting import wait_for

RUNAWAY = "{% for i in range(100000) %}{% for j in range(data.n) %}{% endfor %}{% endfor %}"
BOMB = (
    "{% set ns = namespace(s='x') %}"
    "{% for i in range(28) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"
)
CPU_LIMIT_S = 1.0  # the default


@pytest.fixture(scope="module")
async def stack(
    amqp_url: str,
    postgres_url: str,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    async with running_stack(
        amqp_url, postgres_url, template_database, tmp_path_factory.mktemp("limits"), executors=1
    ) as running:
        yield running


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def children(pid: int) -> list[int]:
    """The render workers: the matcher's child processes."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


async def created_after(stack: Stack, spec: object, count: int, published: float) -> float:
    """Seconds from `published` until the job has `count` runs (the matcher recorded it)."""

    async def recorded() -> float | None:
        return time.monotonic() - published if len(await stack.runs(spec)) >= count else None

    return await wait_for(recorded, 15, what="the normal job's run", interval=0.01)


async def test_runaway_templates_fail_on_their_own_and_delay_no_one(stack: Stack) -> None:
    normal = stack.job(script="noop", command_template="{{ data.n }}", lane=None)
    runaway = stack.job(script="noop", command_template=RUNAWAY, lane=None)
    bomb = stack.job(script="noop", command_template="x", lane=BOMB)
    await stack.add(normal, runaway, bomb)
    matcher = stack.deciders[0].pid
    # Warm: a first event of each kind, so that what is measured is the steady state.
    await stack.publish(normal, {"n": 1})
    quiet = await created_after(stack, normal, 1, time.monotonic())
    rss_before = rss_mb(matcher)

    delays = []
    for round_ in range(2):
        await stack.publish(runaway, {"n": 100_000})
        await stack.publish(bomb, {"n": 1})
        published = time.monotonic()
        await stack.publish(normal, {"n": 2})
        delays.append(await created_after(stack, normal, 2 + round_, published))

    [*_, runaway_run] = await stack.ended(runaway, 2)
    [*_, bomb_run] = await stack.ended(bomb, 2)
    assert runaway_run.state == "failed"
    # "command template: ..." ("command or lane template: ..." when a loaded machine gave the
    # worker less than its CPU second before the wall-clock backstop).
    assert runaway_run.feedback.startswith("could not prepare the run: command")
    assert runaway_run.feedback.endswith("template: rendering exceeded the CPU time limit (1 s)")
    assert bomb_run.state == "failed" and bomb_run.feedback == (
        "could not prepare the run: lane template: rendering exceeded the memory limit (64 MiB)"
    )
    assert max(delays) < CPU_LIMIT_S * 1.5 + 0.5 + 0.5, (quiet, delays)
    assert rss_mb(matcher) - rss_before < 30, (rss_before, rss_mb(matcher))
    for run in await stack.ended(normal, 3):
        assert run.state == "succeeded", run.feedback


async def test_an_event_whose_renders_kill_every_worker_is_parked(stack: Stack) -> None:
    runaway = stack.job(script="noop", command_template=RUNAWAY, lane=None)
    await stack.add(runaway)
    matcher = stack.deciders[0].pid
    born: dict[int, float] = {}
    stop = asyncio.Event()

    async def killer() -> None:
        # Every worker older than its start-up (about 0.15 s) dies: mid-render, every time.
        while not stop.is_set():
            now = time.monotonic()
            for pid in children(matcher):
                if now - born.setdefault(pid, now) > 0.4:
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.02)

    task = asyncio.create_task(killer())
    channel = await stack.connection.channel()
    try:
        event_id = await stack.publish(runaway, {"n": 100_000})
        dead = await channel.get_queue(stack.topology.dead_queue)

        async def parked() -> str | None:
            message = await dead.get(fail=False)
            if message is None:
                return None
            await message.ack()
            return f"{message.message_id}: {(message.headers or {}).get('x-jobmanager-error')}"

        reason = await wait_for(parked, 20, what="the parked event")
    finally:
        stop.set()
        await task
        await channel.close()
    assert reason.startswith(f"{event_id}: rendering its templates crashed the renderer 3 times")
    assert await stack.runs(runaway) == []
    # The matcher goes on with fresh workers.
    normal = stack.job(script="noop", command_template="{{ data.n }}", lane=None)
    await stack.add(normal)
    await stack.publish(normal, {"n": 1})
    [run] = await stack.ended(normal, 1)
    assert run.state == "succeeded"

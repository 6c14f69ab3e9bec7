"""The render pool against real worker processes: each limit, the backstop, crashes.

The templates are the outside review's: each one held the matcher's event loop for minutes or
grew it by hundreds of megabytes when it rendered in-process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest

from jobmanager.jobs.renderer import Crashed, Rendered, RenderLimits, RenderPool, Templates

LIMITS = RenderLimits(cpu_s=0.3, memory_bytes=32 << 20)
DOC = {"event_id": "e1", "event_type": "t", "data": {"n": 100_000, "name": "x"}}
RUNAWAY = "{% for i in range(100000) %}{% for j in range(data.n) %}{% endfor %}{% endfor %}"
CPU_ERROR = "command template: rendering exceeded the CPU time limit (0.3 s)"
MEMORY_ERROR = "command template: rendering exceeded the memory limit (32 MiB)"
MEMORY_BOMBS = {
    "ljust": "{{ ''.ljust(120000000) }}",
    "center": "{{ ''|center(120000000) }}",
    "format": "{{ '%0120000000d'|format(1) }}",
    "tilde": "{% set ns = namespace(s='x') %}"
    "{% for i in range(30) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "namespace": "{% set ns = namespace(l=['xxxxxxxx']) %}"
    "{% for i in range(30) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}",
}


@pytest.fixture
async def pool() -> AsyncIterator[RenderPool]:
    renderer = RenderPool(LIMITS, workers=2)
    await renderer.start()
    yield renderer
    await renderer.close()


async def one(pool: RenderPool, command: str, lane: str | None = None) -> Rendered:
    return await pool.render_one(DOC, Templates(command, lane))


async def test_a_template_renders_its_command_and_lane(pool: RenderPool) -> None:
    rendered = await one(pool, "{{ data | tojson }}", " lane-{{ data.name }} ")
    assert rendered == Rendered(command='{"n": 100000, "name": "x"}', lane="lane-x")


async def test_a_template_error_is_reported_as_before(pool: RenderPool) -> None:
    rendered = await one(pool, "{{ nothing }}")
    assert rendered.error == "command template: 'nothing' is undefined" and rendered.limit is None


async def test_a_runaway_loop_is_stopped_at_the_cpu_limit(pool: RenderPool) -> None:
    start = time.monotonic()
    rendered = await one(pool, RUNAWAY)
    elapsed = time.monotonic() - start
    assert rendered.error == CPU_ERROR and rendered.limit == "cpu"
    assert elapsed < LIMITS.backstop_s, "stopped by the worker's own timer, not the backstop"
    assert (await one(pool, "{{ event_id }}")).command == "e1", "the worker serves on"


@pytest.mark.parametrize("name", MEMORY_BOMBS)
async def test_a_memory_bomb_is_stopped_at_the_memory_limit(pool: RenderPool, name: str) -> None:
    rendered = await one(pool, MEMORY_BOMBS[name])
    assert rendered.error == MEMORY_ERROR and rendered.limit == "memory"
    assert (await one(pool, "{{ event_id }}")).command == "e1"


async def test_a_lane_over_a_limit_says_it_was_the_lane(pool: RenderPool) -> None:
    rendered = await one(pool, "ok", MEMORY_BOMBS["ljust"])
    assert rendered.error == MEMORY_ERROR.replace("command", "lane")


async def test_a_worker_that_does_not_answer_is_killed_at_the_backstop() -> None:
    pool = RenderPool(LIMITS, workers=1)
    await pool.start()
    [stopped] = pool.pids
    try:
        render = asyncio.create_task(one(pool, RUNAWAY))
        await asyncio.sleep(0.1)
        os.kill(stopped, signal.SIGSTOP)  # a stopped worker's own CPU timer never fires
        start = time.monotonic()
        rendered = await render
        waited = time.monotonic() - start
        assert rendered.limit == "cpu" and rendered.error == (
            "command or lane template: rendering exceeded the CPU time limit (0.3 s)"
        )
        assert waited < LIMITS.backstop_s + 0.3
        with pytest.raises(ProcessLookupError):
            os.kill(stopped, 0)
        assert (await one(pool, "{{ event_id }}")).command == "e1"
        assert pool.pids != [stopped]
    finally:
        await pool.close()


async def test_a_batch_keeps_its_order_and_a_runaway_delays_it_by_one_limit(
    pool: RenderPool,
) -> None:
    batch = [({**DOC, "event_id": f"e{i}"}, [Templates("{{ event_id }}", None)]) for i in range(6)]
    batch[2] = (DOC, [Templates(RUNAWAY, None), Templates(MEMORY_BOMBS["ljust"], None)])
    start = time.monotonic()
    outcomes = await pool.render(batch)
    elapsed = time.monotonic() - start
    assert [o[0].command for i, o in enumerate(outcomes) if i != 2 and isinstance(o, list)] == [
        f"e{i}" for i in (0, 1, 3, 4, 5)
    ]
    runaway, bomb = outcomes[2]  # type: ignore[misc]
    assert (runaway.limit, bomb.limit) == ("cpu", "memory")
    assert elapsed < LIMITS.backstop_s + 0.5, "the runaway's limit, not one per render"


async def test_an_event_whose_render_kills_every_worker_is_crashed() -> None:
    pool = RenderPool(LIMITS, workers=1, crash_attempts=2)
    await pool.start()
    killed: list[int] = []

    async def killer() -> None:  # kills each worker as soon as it has the render
        while True:
            for pid in pool.pids:
                if pid not in killed:
                    await asyncio.sleep(0.05)
                    killed.append(pid)
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(killer())
    try:
        [outcome] = await pool.render([(DOC, [Templates(RUNAWAY, None)])])
    finally:
        task.cancel()
        await pool.close()
    assert isinstance(outcome, Crashed)
    assert outcome.reason.startswith("rendering its templates crashed the renderer 2 times")
    assert "exit status -9" in outcome.reason and len(killed) == 2


async def test_a_worker_killed_while_rendering_is_replaced_and_the_render_tried_again() -> None:
    pool = RenderPool(LIMITS, workers=1, crash_attempts=3)
    await pool.start()
    [first] = pool.pids

    async def kill_first() -> None:
        await asyncio.sleep(0.1)
        os.kill(first, signal.SIGKILL)

    task = asyncio.create_task(kill_first())
    try:
        [outcome] = await pool.render([(DOC, [Templates(RUNAWAY, None)])])
    finally:
        await task
        await pool.close()
    assert outcome == [Rendered(error=CPU_ERROR, limit="cpu")]


async def test_an_idle_worker_that_died_does_not_lose_a_render(pool: RenderPool) -> None:
    for pid in pool.pids:
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.05)
    batch = [({**DOC, "event_id": f"e{i}"}, [Templates("{{ event_id }}", None)]) for i in range(4)]
    outcomes = await pool.render(batch)
    assert outcomes == [[Rendered(command=f"e{i}")] for i in range(4)]

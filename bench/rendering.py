"""The cost per event of rendering templates in the render pool rather than in-process.

`python -m bench.rendering` (no broker, no database). For the benchmark's event and its
`MATCHING` jobs (`bench.matching`: a JSON command and a lane each), it times the renders of
one event, and of a batch of 100 events, two ways, alternated round after round so that
noise from the shared machine falls on both alike:

* in-process: `render_command` and `render_lane` called in the loop (what the matcher did
  before; no limit holds there);
* pool: `RenderPool.render` of the batch, one write to the workers and the answers back
  (what the matcher does now, within the limits).

It prints the median per event of each, and the difference.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from bench.matching import MATCHING, bench_event
from bench.stats import median
from jobmanager.jobs.renderer import RenderLimits, RenderPool, Templates
from jobmanager.jobs.templating import render_command, render_lane

COMMAND = "{{ data.channel | tojson }}"
LANE = "{{ data.channel.channel_id }}"
ROUNDS = 20
CALLS = 50


def _inline(batch: list[tuple[dict[str, Any], list[Templates]]]) -> None:
    for document, jobs in batch:
        for job in jobs:
            render_command(job.command, document)
            render_lane(job.lane, document)


async def measure(rounds: int = ROUNDS, calls: int = CALLS) -> dict[str, float]:
    """Median microseconds per event, for batches of 1 and of 100 events, both ways."""
    jobs = [Templates(COMMAND, LANE)] * MATCHING
    batches = {
        size: [({**bench_event().document(), "event_id": f"e{i}"}, jobs) for i in range(size)]
        for size in (1, 100)
    }
    pool = RenderPool(RenderLimits())
    await pool.start()
    timings: dict[str, list[float]] = {}
    clock = time.perf_counter_ns
    try:
        for _ in range(rounds):
            for size, batch in batches.items():
                gc.collect()
                for _ in range(calls if size == 1 else max(1, calls // 10)):
                    start = clock()
                    _inline(batch)
                    timings.setdefault(f"inline_{size}", []).append((clock() - start) / size)
                    start = clock()
                    await pool.render(batch)
                    timings.setdefault(f"pool_{size}", []).append((clock() - start) / size)
    finally:
        await pool.close()
    return {key: median(values) / 1000 for key, values in timings.items()}


def main() -> None:
    result = asyncio.run(measure())
    for size in (1, 100):
        inline, pooled = result[f"inline_{size}"], result[f"pool_{size}"]
        print(
            f"batch of {size:>3} event(s), {MATCHING} jobs each: in-process {inline:7.1f} us/event,"
            f" pool {pooled:7.1f} us/event, overhead {pooled - inline:+7.1f} us/event"
        )


if __name__ == "__main__":
    main()

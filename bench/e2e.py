"""Ours, end to end: throughput at saturation, latency at half of it, and the interval.

Each runs a stack of its own (`bench.stack`): a database and a namespace of its own, a
matcher and executors as processes, the bench job (`script: noop`, `lane: "{{ data.lane }}"`).
The loads (`saturation`, `paced_load`) drive any `Pipeline`: the transport skeleton too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from aio_pika.abc import AbstractConnection

from bench import cpu
from bench.cpu import Usage
from bench.infra import Infra, MeasurementError, tree_rss_mb
from bench.stack import Stack, running
from bench.stats import median, percentile, spread
from bench.traffic import EVENT_TYPE, ConfirmedPublisher, encode, event
from jobmanager.testkit.processes import Process, Processes
from jobmanager.testkit.waiting import wait_for

POLL_S = 0.1
LANES = 1000


@dataclass(frozen=True)
class Setting:
    """A deployment on this machine: matchers, executors, each executor's concurrency."""

    executors: int
    concurrency: int
    matchers: int = 1

    def __str__(self) -> str:
        return f"{self.matchers}m{self.executors}e{self.concurrency}c"

    def describe(self) -> str:
        return (
            f"{self.matchers} matcher(s), {self.executors} executor(s) "
            f"x concurrency {self.concurrency}"
        )

    def stack_options(self) -> dict[str, int]:
        return {
            "matchers": self.matchers,
            "executors": self.executors,
            "concurrency": self.concurrency,
        }


@dataclass(frozen=True)
class Throughput:
    setting: Setting
    runs_per_s: float
    repetitions: list[float]
    events: int
    publish_per_s: float  # how fast the driver got the events into the broker
    executor_rss_mb: float  # one executor and its Python workers, after the load
    cpu: Usage  # over the timed repetitions

    def note(self) -> str:
        return (
            f"{self.setting.describe()}; {self.events:,} events per repetition over "
            f"{LANES:,} lanes; {spread(self.repetitions)} runs/s; " + self.cpu.note()
        )


# A hook around one extra, untimed repetition (the profiler), given the stack.
Around = Callable[[Stack, Callable[[], Awaitable[float]]], Awaitable[None]]


class Pipeline(Protocol):
    """What the loads drive and observe: ours (`Stack`) or the transport skeleton."""

    @property
    def publisher(self) -> ConfirmedPublisher: ...

    @property
    def processes(self) -> Processes: ...

    @property
    def executors(self) -> list[Process]: ...

    async def succeeded(self) -> int:
        """Runs that succeeded so far."""
        ...


async def _saturate(pipeline: Pipeline, events: int) -> tuple[float, float]:
    """Publish `events` as fast as confirms allow; (runs/s from the first publish to the
    moment they have all succeeded, events published per second)."""
    bodies = [encode(event(f"lane-{i % LANES:04d}")) for i in range(events)]
    base = await pipeline.succeeded()
    start = time.perf_counter()
    publishing = asyncio.create_task(pipeline.publisher.many(EVENT_TYPE, bodies))

    async def done() -> float | None:
        if publishing.done() and publishing.exception() is not None:
            publishing.result()
        return time.perf_counter() if await pipeline.succeeded() >= base + events else None

    end = await wait_for(
        done,
        timeout=max(120.0, events / 10),
        what=f"{events} runs to succeed",
        interval=POLL_S,
        alive=pipeline.processes.check_alive,
    )
    published_in = await publishing
    return events / (end - start), events / published_in


async def saturation(
    pipeline: Pipeline,
    setting: Setting,
    trees: dict[str, list[int]],
    *,
    seconds: float,
    max_events: int,
    repetitions: int,
    warmup: int,
) -> Throughput:
    """Runs/s at saturation; each repetition publishes about `seconds` worth of events at
    the warm-up's rate (at least 200, at most `max_events`). The CPU is split by `trees`
    (part name: pids) over the timed repetitions."""
    # Warm-up: the executors start their Python workers on first use.
    warm_rate, _ = await _saturate(pipeline, warmup)
    events = max(200, min(max_events, round(warm_rate * seconds)))
    rates, publish_rates = [], []
    before = cpu.sample(trees)
    for _ in range(repetitions):
        rate, published = await _saturate(pipeline, events)
        rates.append(rate)
        publish_rates.append(published)
    used = cpu.usage(before, cpu.sample(trees), events * repetitions)
    rss, _ = tree_rss_mb(pipeline.executors[0].pid)
    return Throughput(setting, median(rates), rates, events, median(publish_rates), rss, used)


async def _check_all_succeeded(stack: Stack) -> None:
    other = await stack.db.fetch(
        "SELECT state, count(*) AS n FROM runs WHERE state <> 'succeeded' GROUP BY state"
    )
    if other:
        states = ", ".join(f"{r['n']} {r['state']}" for r in other)
        raise MeasurementError(f"not every run succeeded: {states}")


async def throughput(
    infra: Infra,
    connection: AbstractConnection,
    *,
    setting: Setting,
    seconds: float,
    max_events: int,
    repetitions: int,
    warmup: int,
    around: Around | None = None,
) -> Throughput:
    """Ours' runs/s at saturation (see `saturation`)."""
    async with running(infra, connection, **setting.stack_options()) as stack:
        trees = {
            "matchers": [m.pid for m in stack.matchers],
            "executors": [e.pid for e in stack.executors],
        }
        found = await saturation(
            stack,
            setting,
            trees,
            seconds=seconds,
            max_events=max_events,
            repetitions=repetitions,
            warmup=warmup,
        )
        await _check_all_succeeded(stack)
        if around is not None:

            async def extra() -> float:
                return (await _saturate(stack, found.events))[0]

            await around(stack, extra)
    return found


# -- latency --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    rate: float  # events/s asked for
    achieved: float  # events/s the driver managed
    p50_ms: float
    p99_ms: float
    max_ms: float
    samples: int
    stages_p50_ms: dict[str, float]

    pinned: bool = False  # the rate was given (`--latency-rate`), not half of the peak
    # Per part: shares of the wall time on a core and waiting for one (`cpu.sched_shares`).
    cores: dict[str, tuple[float, float]] = field(default_factory=dict)

    def note(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stages_p50_ms.items())
        asked = "as asked" if self.pinned else f"half of peak {2 * self.rate:.0f}/s"
        cores = ", ".join(f"{k} {on:.0%} / {wait:.0%}" for k, (on, wait) in self.cores.items())
        return (
            f"{self.samples:,} runs paced at {self.achieved:.0f}/s ({asked}); "
            f"max {self.max_ms:.0f} ms; p50 by stage (ms): {stages}"
            + (f"; on a core / waiting for one: {cores}" if cores else "")
        )


async def _paced(pipeline: Pipeline, rate: float, seconds: float) -> tuple[int, float]:
    """Publish at `rate` for `seconds`, each event stamped with its publish time; (events,
    achieved rate)."""
    loop = asyncio.get_running_loop()
    count = max(1, int(rate * seconds))
    period = 1 / rate
    pending: set[asyncio.Task[None]] = set()
    start = loop.time()
    for i in range(count):
        delay = start + i * period - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        body = encode(event(f"lane-{i % LANES:04d}", occurred_at=datetime.now(UTC)))
        task = asyncio.create_task(pipeline.publisher.one(EVENT_TYPE, body))
        pending.add(task)
        task.add_done_callback(pending.discard)
    elapsed = loop.time() - start
    if pending:
        await asyncio.gather(*pending)
    return count, count / max(elapsed, period)


async def _all_done(pipeline: Pipeline, target: int, timeout: float) -> None:
    async def done() -> bool | None:
        return True if await pipeline.succeeded() >= target else None

    await wait_for(
        done,
        timeout=timeout,
        what="the runs",
        interval=POLL_S,
        alive=pipeline.processes.check_alive,
    )


async def paced_load(
    pipeline: Pipeline, rate: float, *, seconds: float, warmup_s: float
) -> tuple[datetime, int, float]:
    """A warm-up at `rate`, then `seconds` at `rate`, each until all its runs succeeded;
    (when the measured events began, how many there were, the rate achieved)."""
    base = await pipeline.succeeded()
    warm, _ = await _paced(pipeline, rate, warmup_s)
    await _all_done(pipeline, base + warm, 120)
    since = datetime.now(UTC)
    count, achieved = await _paced(pipeline, rate, seconds)
    await _all_done(pipeline, base + warm + count, 120 + seconds)
    return since, count, achieved


async def latency(
    infra: Infra,
    connection: AbstractConnection,
    setting: Setting,
    *,
    rate: float,
    seconds: float,
    warmup_s: float,
) -> Latency:
    """Event publish → script start (the executor's `started_at`), paced at `rate`."""
    async with running(infra, connection, **setting.stack_options()) as stack:
        # The matchers and the executors' main processes, and Postgres's, over the warm-up
        # and the window (their Python workers, one per slot, are mostly idle).
        parts = {
            "matcher": [m.pid for m in stack.matchers],
            "executor": [e.pid for e in stack.executors],
            "postgres": cpu.postgres_pids(),
        }
        before, started = cpu.sched_sample(parts), time.perf_counter()
        since, count, achieved = await paced_load(stack, rate, seconds=seconds, warmup_s=warmup_s)
        parts["postgres"] = cpu.postgres_pids()  # backends opened meanwhile count whole
        cores = cpu.sched_shares(before, cpu.sched_sample(parts), time.perf_counter() - started)
        await _check_all_succeeded(stack)
        rows = await stack.db.fetch(
            """
            SELECT extract(epoch FROM a.started_at - e.occurred_at) * 1000 AS ms,
                   extract(epoch FROM e.received_at - e.occurred_at) * 1000 AS to_matcher,
                   extract(epoch FROM a.dispatched_at - e.received_at) * 1000 AS to_dispatch,
                   extract(epoch FROM a.started_at - a.dispatched_at) * 1000 AS to_start
            FROM runs r
            JOIN attempts a ON a.run_id = r.id AND a.attempt = 1
            JOIN events e ON e.id = r.event_pk
            WHERE e.occurred_at >= $1
            """,
            since,
        )
    values = [float(r["ms"]) for r in rows]
    if len(values) != count:
        raise MeasurementError(f"expected {count} latencies, found {len(values)}")
    stages = {
        "publish->matcher": median([float(r["to_matcher"]) for r in rows]),
        "received->dispatch": median([float(r["to_dispatch"]) for r in rows]),
        "dispatch->script start": median([float(r["to_start"]) for r in rows]),
    }
    return Latency(
        rate,
        achieved,
        percentile(values, 50),
        percentile(values, 99),
        max(values),
        len(values),
        stages,
        cores=cores,
    )


# -- interval -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    interval_s: float
    late_ms: list[float] = field(repr=False)

    @property
    def p95_ms(self) -> float:
        return percentile(self.late_ms, 95)

    @property
    def early(self) -> int:
        """Starts sooner than the interval after the previous finish (never allowed)."""
        return sum(1 for v in self.late_ms if v < 0)

    def note(self) -> str:
        return (
            f"{len(self.late_ms)} gaps in one lane, interval {self.interval_s} s; median "
            f"{median(self.late_ms):.1f} ms, max {max(self.late_ms):.1f} ms, "
            f"{self.early} early"
        )


async def interval(
    infra: Infra,
    connection: AbstractConnection,
    setting: Setting,
    *,
    runs: int,
    interval_s: float = 0.2,
) -> Interval:
    """`runs` events for one lane at once; lateness = next start - previous finish - interval."""
    async with running(
        infra, connection, **setting.stack_options(), interval_s=interval_s
    ) as stack:
        bodies = [encode(event("interval-lane")) for _ in range(runs)]
        await stack.publisher.many(EVENT_TYPE, bodies)
        await _all_done(stack, runs, 60 + runs * (interval_s + 1))
        await _check_all_succeeded(stack)
        rows = await stack.db.fetch(
            """
            SELECT a.started_at, a.finished_at FROM runs r
            JOIN attempts a ON a.run_id = r.id AND a.attempt = r.attempt
            ORDER BY r.id
            """
        )
    late = [
        ((nxt["started_at"] - prev["finished_at"]).total_seconds() - interval_s) * 1000
        for prev, nxt in itertools.pairwise(rows)
    ]
    return Interval(interval_s, late)

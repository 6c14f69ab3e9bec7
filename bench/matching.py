"""Matcher cost per event with 10 and with 10,000 registered jobs, the same 3 matching.

Both catalogues are stored in a database of their own and loaded by the matcher's own
`Catalogue.load`; then `Catalogue.plan([event], renderer)` (the event as triggers see it, the
index lookup, the conditions, the templates of the matching jobs rendered by the render pool's
workers, one round trip) is timed call by call with
`perf_counter_ns`, alternating between the two catalogues round after round so that noise
from the shared machine falls on both alike.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

from bench.infra import Infra, MeasurementError, database
from bench.stats import median
from jobmanager.core.messages import Event
from jobmanager.jobs.renderer import Crashed, RenderLimits, RenderPool
from jobmanager.jobs.spec import JobSpec
from jobmanager.matcher.catalogue import Catalogue
from jobmanager.store import jobs as job_store
from jobmanager.store.db import create_engine

MATCHING = 3
OTHER_TYPES = ["channel.added", "channel.removed", "service.created", "service.*"]


@dataclass(frozen=True)
class Matching:
    small: int
    large: int
    small_us: float
    large_us: float
    load_large_s: float  # Catalogue.load with the large catalogue
    calls: int

    @property
    def ratio(self) -> float:
        return self.large_us / self.small_us

    def note(self) -> str:
        return (
            f"plan(): {self.small_us:.1f} us with {self.small:,} jobs, {self.large_us:.1f} us "
            f"with {self.large:,} ({MATCHING} match); median of {self.calls:,} calls each; "
            f"loading {self.large:,} jobs took {self.load_large_s:.1f} s"
        )


def _job(name: str, event_type: str, origin: str) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": name,
            "trigger": {
                "event_type": event_type,
                "conditions": [
                    {"path": "data.channel.origin", "op": "eq", "value": origin},
                    {"path": "data.changes.pod_service", "op": "exists"},
                ],
            },
            "script": "noop",
            "command_template": "{{ data.channel | tojson }}",
            "lane": "{{ data.channel.channel_id }}",
        }
    )


def catalogue_jobs(total: int) -> list[JobSpec]:
    """`MATCHING` jobs that match the bench event; of the others, 70% have its event type
    with another `eq` value, 30% other event types (exact and glob)."""
    specs = [_job(f"match-{i}", "channel.updated", "avcm") for i in range(MATCHING)]
    others = total - MATCHING
    same_type = round(others * 0.7)
    specs += [_job(f"other-{i}", "channel.updated", f"origin-{i}") for i in range(same_type)]
    specs += [
        _job(f"type-{i}", OTHER_TYPES[i % len(OTHER_TYPES)], "avcm")
        for i in range(others - same_type)
    ]
    return specs


def bench_event() -> Event:
    return Event.model_validate(
        {
            "event_id": "4b1f0c2e",
            "event_type": "channel.updated",
            "occurred_at": "2026-11-24T10:00:00Z",
            "data": {
                "channel": {
                    "channel_id": "ESPN-HD",
                    "name": "ESPN HD",
                    "origin": "avcm",
                    "pod_service": "pod-7",
                    "compression_element": "enc-12",
                    "valid": True,
                },
                "changes": {"pod_service": {"old": "pod-3", "new": "pod-7"}},
            },
        }
    )


async def _load(infra: Infra, total: int) -> tuple[Catalogue, float]:
    async with database(infra) as url:
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as conn:
                rows: list[dict[str, Any]] = [job_store.columns(s) for s in catalogue_jobs(total)]
                await conn.execute(job_store.jobs.insert(), rows)
            start = time.perf_counter()
            catalogue = await Catalogue.load(engine)
            loaded_in = time.perf_counter() - start
        finally:
            await engine.dispose()
    if len(catalogue.index) != total:
        raise MeasurementError(f"the catalogue holds {len(catalogue.index)} of {total} jobs")
    return catalogue, loaded_in


async def _time_calls(
    catalogue: Catalogue, event: Event, renderer: RenderPool, calls: int
) -> list[int]:
    timings = []
    clock = time.perf_counter_ns
    plan = catalogue.plan
    for _ in range(calls):
        start = clock()
        await plan([event], renderer)
        timings.append(clock() - start)
    return timings


async def measure(
    infra: Infra, *, small: int = 10, large: int = 10_000, rounds: int, calls: int
) -> Matching:
    catalogues = {small: await _load(infra, small), large: await _load(infra, large)}
    event = bench_event()
    renderer = RenderPool(RenderLimits())
    try:
        await renderer.start()
        for size, (catalogue, _) in catalogues.items():
            [planned] = await catalogue.plan([event], renderer)
            if isinstance(planned, Crashed) or len(planned.runs) != MATCHING:
                raise MeasurementError(f"the {size}-job catalogue does not plan {MATCHING} runs")
        timings: dict[int, list[int]] = {small: [], large: []}
        for _ in range(rounds):
            for size, (catalogue, _) in catalogues.items():
                gc.collect()
                timings[size] += await _time_calls(catalogue, event, renderer, calls)
    finally:
        await renderer.close()
    return Matching(
        small,
        large,
        median(timings[small]) / 1000,
        median(timings[large]) / 1000,
        catalogues[large][1],
        rounds * calls,
    )

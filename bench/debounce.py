"""What a debounced burst costs per event, against the same burst without debounce.

One database, two jobs alike but for `debounce_s`. A burst is `events` events for one lane of
its own, handed to `ledger.enqueue` in the matcher's batches (`batch` events per call), as a
burst reaches the matcher. Without debounce each event adds a queued run to the lane; with
it, each supersedes the run still waiting there (the debounce pass of `ledger_enqueue`), so
the lane ends with one run. Bursts of the two kinds alternate round after round so that noise
from the shared machine falls on both alike; no broker is involved (nothing is published).
"""

from __future__ import annotations

import gc
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.infra import Infra, MeasurementError, database
from bench.stats import median
from jobmanager.core.messages import Event
from jobmanager.jobs.spec import JobSpec, PlannedRun, Trigger
from jobmanager.store import jobs as job_store
from jobmanager.store import ledger
from jobmanager.store.db import create_engine
from jobmanager.store.models import Run


@dataclass(frozen=True)
class Debounce:
    debounced_us: float  # per event, median over the bursts
    plain_us: float
    events: int  # per burst
    bursts: int  # of each kind

    @property
    def ratio(self) -> float:
        return self.debounced_us / self.plain_us

    def note(self) -> str:
        return (
            f"ledger.enqueue per event of a {self.events}-event burst into one lane: "
            f"{self.debounced_us:.0f} us debounced, {self.plain_us:.0f} us without; median of "
            f"{self.bursts} bursts each"
        )


async def measure(infra: Infra, *, bursts: int, events: int = 100, batch: int = 20) -> Debounce:
    async with database(infra) as url:
        engine = create_engine(url, pool_size=1)
        try:
            planned: dict[bool, PlannedRun] = {}
            for debounced in (True, False):
                spec = JobSpec(
                    name=f"burst-{'debounced' if debounced else 'plain'}",
                    trigger=Trigger(event_type="channel.updated"),
                    script="noop",
                    debounce_s=60 if debounced else 0,
                )
                async with engine.begin() as conn:
                    job_id, _ = await job_store.upsert(conn, spec)
                planned[debounced] = PlannedRun(
                    job_id=job_id,
                    job_name=spec.name,
                    script="noop",
                    command="{}",
                    lane=None,
                    debounce_s=spec.debounce_s,
                )
            timings: dict[bool, list[float]] = {True: [], False: []}
            lanes: dict[bool, list[str]] = {True: [], False: []}
            for _ in range(bursts):
                for debounced, run in planned.items():
                    lane = uuid.uuid4().hex
                    lanes[debounced].append(lane)
                    run = PlannedRun(**{**vars(run), "lane": lane})
                    burst = [
                        Event(event_id=uuid.uuid4().hex, event_type="channel.updated")
                        for _ in range(events)
                    ]
                    gc.collect()
                    start = time.perf_counter()
                    for first in range(0, events, batch):
                        async with engine.connect() as conn:
                            await ledger.enqueue(
                                conn,
                                [(e, [run]) for e in burst[first : first + batch]],
                                interval_s=0.0,
                                now=datetime.now(UTC),
                            )
                            await conn.commit()
                    timings[debounced].append((time.perf_counter() - start) / events * 1e6)
            await _check(engine, lanes, events)
        finally:
            await engine.dispose()
    return Debounce(median(timings[True]), median(timings[False]), events, bursts)


async def _check(engine: AsyncEngine, lanes: dict[bool, list[str]], events: int) -> None:
    """Each debounced burst left one queued run in its lane, each plain one all of them."""
    async with engine.connect() as conn:
        for debounced, names in lanes.items():
            queued = await conn.scalar(
                select(func.count()).where(Run.lane.in_(names), Run.state == "queued")
            )
            want = len(names) * (1 if debounced else events)
            if queued != want:
                raise MeasurementError(
                    f"{'debounced' if debounced else 'plain'} bursts left {queued} queued runs, "
                    f"not {want}"
                )

"""Baseline: the transport skeleton, the ceiling our message design imposes by itself.

Per run of the no-op script due at once, ours moves an event (events queue), a `run.queued`
notice (runs exchange), a job request (work queue), a result (results exchange and queue)
and a `run.succeeded` notice, all persistent and confirmed, each input acked only once what
it produced is confirmed. The skeleton moves exactly these through the real topology of a
namespace of its own, with our real executors, but with our matcher replaced by a raw
aio-pika stand-in that has no database (`bench.skeleton_process`). Its runs/s is what the
messages alone allow with our executor on this machine; ours over it is the share of that
ceiling that the ledger leaves.

It is measured like ours (`bench.e2e`), in ours' deployment: runs/s at saturation, then event
publish -> script start paced at the rate ours' latency was measured at (half of ours' peak),
or at half of its own peak when ours has none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aio_pika.abc import AbstractConnection

from bench.e2e import LANES, Latency, Setting, Throughput, paced_load, saturation
from bench.infra import Infra, MeasurementError, namespace
from bench.relay import PREFETCH
from bench.stack import Stack, service_env, serving
from bench.stats import median, percentile, spread
from bench.traffic import ConfirmedPublisher
from jobmanager.testkit.namespaces import unique
from jobmanager.testkit.processes import Process, Processes


@dataclass(frozen=True)
class SkeletonResult:
    throughput: Throughput
    latency: Latency
    rate_from: str  # where the latency's rate came from

    @property
    def runs_per_s(self) -> float:
        return self.throughput.runs_per_s

    def note(self) -> str:
        t = self.throughput
        return (
            f"ours' 5 messages per run, our executor(s) ({t.setting.executors} x concurrency "
            f"{t.setting.concurrency}), a raw aio-pika stand-in for the matcher (no database, "
            f"prefetch {PREFETCH}); {t.events:,} events per repetition over {LANES:,} lanes; "
            f"{spread(t.repetitions)} runs/s; "
            + t.cpu.note()
            + f"; events published at {t.publish_per_s:,.0f}/s"
        )

    def latency_note(self) -> str:
        lat = self.latency
        stages = ", ".join(f"{k} {v:.1f}" for k, v in lat.stages_p50_ms.items())
        return (
            f"{lat.samples:,} runs paced at {lat.achieved:.0f}/s ({self.rate_from}); "
            f"max {lat.max_ms:.0f} ms; p50 by stage (ms): {stages}"
        )


@dataclass
class Skeleton:
    """The skeleton running: what `e2e.saturation` and `e2e.paced_load` drive."""

    services: Stack
    stand_in: Process
    counted: Path  # the stand-in keeps its count of succeeded runs here

    @property
    def publisher(self) -> ConfirmedPublisher:
        return self.services.publisher

    @property
    def processes(self) -> Processes:
        return self.services.processes

    @property
    def executors(self) -> list[Process]:
        return self.services.executors

    async def succeeded(self) -> int:
        # The stand-in rewrites the number in place: two equal reads in a row are not torn.
        while (count := self.counted.read_bytes()) != self.counted.read_bytes():
            pass
        return int(count)


async def measure(
    infra: Infra,
    connection: AbstractConnection,
    setting: Setting,
    *,
    seconds: float,
    max_events: int,
    repetitions: int,
    warmup: int,
    latency_rate: float | None,
    latency_s: float,
    latency_warmup_s: float,
) -> SkeletonResult:
    """Runs/s at saturation as `e2e.throughput` measures it, with `setting`'s executors
    (and one stand-in, however many matchers it has), then the latency as `e2e.latency`
    measures it, at `latency_rate` or, without one, at half of the skeleton's own peak."""
    counted = infra.workdir / f"{unique('skeleton')}.count"
    latencies = counted.with_suffix(".latencies.json")
    stand_in = ["bench.skeleton_process", str(counted), str(latencies), str(PREFETCH)]
    async with (
        namespace(infra) as topology,
        serving(
            infra,
            connection,
            topology,
            service_env(infra, topology),
            deciders={"skeleton": stand_in},
            consumes_last=topology.results_queue,
            executors=setting.executors,
            concurrency=setting.concurrency,
        ) as services,
    ):
        skeleton = Skeleton(services, services.deciders[0], counted)
        trees = {
            "skeleton": [skeleton.stand_in.pid],
            "executors": [e.pid for e in skeleton.executors],
        }
        found = await saturation(
            skeleton,
            setting,
            trees,
            seconds=seconds,
            max_events=max_events,
            repetitions=repetitions,
            warmup=warmup,
        )
        rate = latency_rate or found.runs_per_s / 2
        since, count, achieved = await paced_load(
            skeleton, rate, seconds=latency_s, warmup_s=latency_warmup_s
        )
        await services.processes.stop(skeleton.stand_in)  # on SIGTERM it writes the latencies
        if not latencies.exists():
            raise MeasurementError(
                f"the stand-in wrote no latencies; its log ({skeleton.stand_in.log}) ends:\n"
                + skeleton.stand_in.tail()
            )
    # (event published, ms to script start, ms to the stand-in) of every run that succeeded
    rows = [r for r in json.loads(latencies.read_text()) if r[0] >= since.timestamp()]
    if len(rows) != count:
        raise MeasurementError(f"expected {count} latencies, found {len(rows)}")
    values = [r[1] for r in rows]
    stages = {
        "publish->stand-in": median([r[2] for r in rows]),
        "stand-in->script start": median([r[1] - r[2] for r in rows]),
    }
    latency = Latency(
        rate,
        achieved,
        percentile(values, 50),
        percentile(values, 99),
        max(values),
        len(values),
        stages,
    )
    rate_from = "ours' latency rate" if latency_rate else f"half of its peak {2 * rate:.0f}/s"
    return SkeletonResult(found, latency, rate_from)

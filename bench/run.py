"""`python -m bench.run [--quick]`: every measurement, one after the other, then the table
and the one `RESULT key=value ...` line (the last line printed).

Baselines and ours run in the same invocation on the same broker and database server, never
at the same time (the machine has few cores). The exit status is 0 when everything could be
measured, whether or not the targets hold; 1 when something could not be measured.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aio_pika.abc import AbstractConnection

from bench import api, celery_baseline, debounce, e2e, matching, memory, relay, skeleton
from bench.celery_app import QueueType
from bench.e2e import Setting
from bench.infra import Driver, Infra, disturbed, driver
from bench.profiling import Profiler
from bench.report import CELERY_SECTIONS, Report
from jobmanager.core.broker import connect
from jobmanager.core.runtime import Unavailable
from jobmanager.store import db
from jobmanager.testkit.namespaces import broken

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """How much of everything: the full run, or the quick one (at most 3 minutes)."""

    quick: bool
    repetitions: int
    relay_messages: int
    rep_seconds: float  # Celery's and ours: each repetition sized to last about this long
    celery_warmup: int
    celery_max: int
    celery_quorum_max: int  # slower than classic, so the quick run caps it lower
    settings: tuple[Setting, ...]
    e2e_warmup: int
    e2e_max: int
    latency_s: float
    latency_warmup_s: float
    interval_runs: int
    match_rounds: int
    match_calls: int
    debounce_bursts: int
    api_runs: int
    api_sequential: int
    api_concurrent: int


QUICK_SETTING = Setting(executors=1, concurrency=4)

FULL = Plan(
    quick=False,
    repetitions=3,
    relay_messages=15_000,
    rep_seconds=30.0,
    celery_warmup=300,
    celery_max=20_000,
    celery_quorum_max=20_000,
    settings=(Setting(1, 4), Setting(2, 4), Setting(1, 16), Setting(2, 4, matchers=2)),
    e2e_warmup=200,
    e2e_max=10_000,
    latency_s=40.0,
    latency_warmup_s=5.0,
    interval_runs=61,
    match_rounds=10,
    match_calls=2_000,
    debounce_bursts=20,
    api_runs=1_000_000,
    api_sequential=150,
    api_concurrent=10,
)

QUICK = Plan(
    quick=True,
    repetitions=2,
    relay_messages=4_000,
    rep_seconds=10.0,
    celery_warmup=200,
    celery_max=3_000,
    celery_quorum_max=2_000,
    settings=(QUICK_SETTING,),
    e2e_warmup=100,
    e2e_max=2_000,
    latency_s=10.0,
    latency_warmup_s=2.0,
    interval_runs=31,
    match_rounds=5,
    match_calls=1_000,
    debounce_bursts=6,
    api_runs=100_000,
    api_sequential=40,
    api_concurrent=5,
)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


async def attempt(
    report: Report,
    broker: Driver,
    section: str,
    work: Callable[[AbstractConnection], Awaitable[T]],
    *,
    tries: int = 3,
) -> T | None:
    """Run one measurement; a failure is reported and the others go on.

    The machine is shared, and other people's fault tests restart RabbitMQ and Postgres: a
    measurement disturbed that way (the driver's connection closed, the database gone) is
    measured again, and the table says so.
    """
    for number in range(1, tries + 1):
        say(f"{section}: measuring" + (f" (try {number})" if number > 1 else ""))
        started = time.perf_counter()
        connection = await broker.connection()
        try:
            value = await work(connection)
        except Exception as exc:
            if number < tries and (broken(connection) or disturbed(exc)):
                say(f"{section}: the broker or the database went away ({exc}); again")
                report.retried[section] = report.retried.get(section, 0) + 1
                await asyncio.sleep(10)
                continue
            report.failed(section, f"{type(exc).__name__}: {exc}")
            traceback.print_exc()
            return None
        say(f"{section}: done in {time.perf_counter() - started:.0f} s")
        return value
    return None


async def measure(
    plan: Plan,
    infra: Infra,
    report: Report,
    profiler: Profiler | None,
    latency_rate: float | None = None,
) -> None:
    async with driver(infra) as broker:
        report.relay = await attempt(
            report,
            broker,
            "relay",
            lambda c: relay.measure(
                infra, c, messages=plan.relay_messages, repetitions=plan.repetitions
            ),
        )
        celery_plans: tuple[tuple[QueueType, int], ...] = (
            ("classic", plan.celery_max),
            ("quorum", plan.celery_quorum_max),
        )
        for queue_type, max_tasks in celery_plans:
            baseline = await attempt(
                report,
                broker,
                CELERY_SECTIONS[queue_type],
                functools.partial(
                    celery_baseline.measure,
                    infra,
                    queue_type=queue_type,
                    seconds=plan.rep_seconds,
                    max_tasks=max_tasks,
                    repetitions=plan.repetitions,
                    warmup=plan.celery_warmup,
                ),
            )
            if baseline is not None:
                report.celery[queue_type] = baseline
        for index, setting in enumerate(plan.settings):
            last = index == len(plan.settings) - 1
            found = await attempt(
                report,
                broker,
                f"e2e throughput {setting}",
                functools.partial(
                    e2e.throughput,
                    infra,
                    setting=setting,
                    seconds=plan.rep_seconds,
                    max_events=plan.e2e_max,
                    repetitions=plan.repetitions,
                    warmup=plan.e2e_warmup,
                    around=profiler.around if profiler is not None and last else None,
                ),
            )
            if found is not None:
                report.throughputs.append(found)
        best = report.best
        setting = best.setting if best is not None else QUICK_SETTING
        # Ours' latency rate; the skeleton's latency is measured at the same one.
        rate = latency_rate or (best.runs_per_s / 2 if best is not None else None)
        if best is not None and rate is not None:
            report.latency = await attempt(
                report,
                broker,
                "e2e latency",
                lambda c: e2e.latency(
                    infra,
                    c,
                    setting,
                    rate=rate,
                    seconds=plan.latency_s,
                    warmup_s=plan.latency_warmup_s,
                ),
            )
            if report.latency is not None and latency_rate:
                report.latency = dataclasses.replace(report.latency, pinned=True)
        report.skeleton = await attempt(
            report,
            broker,
            "skeleton",
            lambda c: skeleton.measure(
                infra,
                c,
                setting,
                seconds=plan.rep_seconds,
                max_events=plan.e2e_max,
                repetitions=plan.repetitions,
                warmup=plan.e2e_warmup,
                latency_rate=rate,
                latency_s=plan.latency_s,
                latency_warmup_s=plan.latency_warmup_s,
            ),
        )
        report.interval = await attempt(
            report,
            broker,
            "interval",
            lambda c: e2e.interval(infra, c, setting, runs=plan.interval_runs),
        )
        report.matching = await attempt(
            report,
            broker,
            "matching",
            lambda _: matching.measure(infra, rounds=plan.match_rounds, calls=plan.match_calls),
        )
        report.debounce = await attempt(
            report,
            broker,
            "debounce",
            lambda _: debounce.measure(infra, bursts=plan.debounce_bursts),
        )
        report.api = await attempt(
            report,
            broker,
            "api",
            lambda _: api.measure(
                infra,
                runs=plan.api_runs,
                sequential=plan.api_sequential,
                concurrent=plan.api_concurrent,
            ),
        )
        report.memory = await attempt(
            report,
            broker,
            "memory",
            lambda c: memory.measure(infra, c, concurrency=setting.concurrency),
        )


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick run (at most 3 min)")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="profile the matcher and an executor with py-spy during one extra saturation "
        "run of the last setting; raw stacks and summary.md go to DIR",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument(
        "--latency-rate",
        type=float,
        metavar="EVENTS_PER_S",
        help="measure the latency at this rate instead of half of the peak (to compare two "
        "settings at the same load)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service of ours, e.g. JOBMANAGER_BATCH_MAX=1 (repeatable)",
    )
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a maintenance database of the server; the benchmark creates its own",
    )
    return parser.parse_args(argv)


def _preflight(infra: Infra) -> str | None:
    """One clear line when the broker or the database server does not answer."""

    async def check() -> None:
        await db.check(infra.server_url)
        await (await connect(infra.amqp_url, name="jobmanager-bench", timeout=5)).close()

    try:
        asyncio.run(check())
    except Unavailable as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    plan = QUICK if args.quick else FULL
    profiler = Profiler(args.profile) if args.profile else None
    workdir = Path(tempfile.mkdtemp(prefix="jobmanager-bench-"))
    settings = dict(item.split("=", 1) for item in args.set)
    infra = Infra(args.amqp_url, args.database_url, workdir, settings)
    problem = _preflight(infra)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
        return 1
    report = Report(
        quick=plan.quick,
        started=datetime.now(UTC),
        cores=os.cpu_count() or 1,
        api_runs=plan.api_runs,
        load_before=os.getloadavg()[0],
        settings=",".join(f"{k}:{v}" for k, v in settings.items()) or "default",
    )
    say(f"{'quick' if plan.quick else 'full'} run on {report.cores} cores; logs in {workdir}")
    started = time.perf_counter()
    try:
        asyncio.run(measure(plan, infra, report, profiler, args.latency_rate))
    finally:
        report.wall_s = time.perf_counter() - started
        report.load_after = os.getloadavg()[0]
        if args.keep_logs or report.failures:
            say(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if profiler is not None and profiler.summaries:
        say(f"profiles in {args.profile}/summary.md")
        for summary in profiler.summaries:
            print(summary.render(top=12))
    report.print_table()
    figures = report.figures()
    if args.json:
        args.json.write_text(json.dumps(_jsonable(figures), indent=2) + "\n")
    print(report.result_line(), flush=True)
    return 1 if report.failures else 0


def _jsonable(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()}


if __name__ == "__main__":
    sys.exit(main())

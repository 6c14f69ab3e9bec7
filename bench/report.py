"""The figures: a table of every one (with its target and whether it holds) and the final
`RESULT key=value ...` line."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.api import Api
from bench.celery_app import QueueType
from bench.celery_baseline import CeleryResult
from bench.debounce import Debounce
from bench.e2e import Interval, Latency, Throughput
from bench.matching import Matching
from bench.memory import Memory
from bench.relay import RelayResult
from bench.skeleton import SkeletonResult

NAN = math.nan

# key: (comparison, bound) for the SPEC's targets (§10).
TARGETS: dict[str, tuple[str, float]] = {
    "e2e_vs_celery": (">=", 1.0),
    # Like for like: Celery with the replication our queues have.
    "e2e_vs_celery_quorum": (">=", 1.5),
    "e2e_vs_skeleton": (">=", 0.95),
    "p50_ms": ("<=", 15.0),
    "p99_ms": ("<=", 100.0),
    "interval_late_ms_p95": ("<=", 50.0),
    "match_cost_10k_vs_10": ("<=", 2.0),
    "api_p99_ms": ("<=", 50.0),
    "api_activity_p99_ms": ("<=", 100.0),
    "executor_idle_rss_mb": ("<=", 80.0),
}

# The RESULT line's keys in order, with their precision.
PRECISION: dict[str, int] = {
    "e2e_runs_per_s": 1,
    "relay_msgs_per_s": 1,
    "celery_tasks_per_s": 1,
    "e2e_vs_celery": 2,
    "celery_quorum_tasks_per_s": 1,
    "e2e_vs_celery_quorum": 2,
    "e2e_vs_relay": 3,
    "p50_ms": 1,
    "p99_ms": 1,
    "interval_late_ms_p95": 1,
    "match_cost_10k_vs_10": 2,
    "api_p99_ms": 1,
    "executor_idle_rss_mb": 1,
    "latency_rate_per_s": 1,
    "interval_early": 0,
    "match_cost_10_us": 1,
    "match_cost_10k_us": 1,
    "api_queue_p99_ms": 1,
    "api_executed_p99_ms": 1,
    "api_p99_ms_4_clients": 1,
    "api_activity_p99_ms": 1,
    "hop_p50_ms": 1,
    "executor_loaded_rss_mb": 1,
    "skeleton_runs_per_s": 1,
    "skeleton_vs_celery": 2,
    "e2e_vs_skeleton": 2,
    "debounce_cost_vs_plain": 2,
    "debounce_us_per_event": 0,
    "matcher_core_wait_pct": 0,
    "skeleton_p50_ms": 1,
    "skeleton_p99_ms": 1,
    "load_1m_before": 2,
    "load_1m_after": 2,
    "wall_s": 0,
}


# The Celery baselines' sections (in progress lines, failures and retries), by queue type.
CELERY_SECTIONS: dict[QueueType, str] = {"classic": "celery", "quorum": "celery quorum"}


def holds(key: str, value: float) -> bool | None:
    if key not in TARGETS or math.isnan(value):
        return None
    comparison, bound = TARGETS[key]
    return value >= bound if comparison == ">=" else value <= bound


def _get(obj: Any, read: Callable[[Any], float]) -> float:
    return NAN if obj is None else float(read(obj))


@dataclass
class Report:
    quick: bool
    started: datetime
    cores: int
    api_runs: int
    load_before: float
    settings: str = "default"  # what `--set` gave the services
    load_after: float = NAN
    wall_s: float = NAN
    relay: RelayResult | None = None
    celery: dict[QueueType, CeleryResult] = field(default_factory=dict)
    throughputs: list[Throughput] = field(default_factory=list)
    latency: Latency | None = None
    skeleton: SkeletonResult | None = None
    interval: Interval | None = None
    matching: Matching | None = None
    debounce: Debounce | None = None
    api: Api | None = None
    memory: Memory | None = None
    failures: dict[str, str] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)

    def failed(self, section: str, reason: str) -> None:
        self.failures[section] = reason

    @property
    def best(self) -> Throughput | None:
        return max(self.throughputs, key=lambda t: t.runs_per_s, default=None)

    def figures(self) -> dict[str, Any]:
        best = self.best
        e2e = _get(best, lambda b: b.runs_per_s)
        relay = _get(self.relay, lambda r: r.msgs_per_s)
        celery = _get(self.celery.get("classic"), lambda c: c.tasks_per_s)
        celery_quorum = _get(self.celery.get("quorum"), lambda c: c.tasks_per_s)
        skeleton = _get(self.skeleton, lambda s: s.runs_per_s)
        api = self.api
        figures: dict[str, Any] = {
            "mode": "quick" if self.quick else "full",
            "cores": self.cores,
            "settings": self.settings,
            "api_runs": self.api_runs,
            "e2e_setting": str(best.setting) if best else "none",
            "e2e_runs_per_s": e2e,
            "relay_msgs_per_s": relay,
            "celery_tasks_per_s": celery,
            "e2e_vs_celery": e2e / celery,
            "celery_quorum_tasks_per_s": celery_quorum,
            "e2e_vs_celery_quorum": e2e / celery_quorum,
            "e2e_vs_relay": e2e / relay,
            "p50_ms": _get(self.latency, lambda x: x.p50_ms),
            "p99_ms": _get(self.latency, lambda x: x.p99_ms),
            "interval_late_ms_p95": _get(self.interval, lambda x: x.p95_ms),
            "match_cost_10k_vs_10": _get(self.matching, lambda m: m.ratio),
            "api_p99_ms": _get(api, lambda a: a.p99_ms),
            "executor_idle_rss_mb": _get(self.memory, lambda m: m.rss_mb),
            "latency_rate_per_s": _get(self.latency, lambda x: x.achieved),
            "interval_early": _get(self.interval, lambda x: x.early),
            "match_cost_10_us": _get(self.matching, lambda m: m.small_us),
            "match_cost_10k_us": _get(self.matching, lambda m: m.large_us),
            "api_queue_p99_ms": _get(api, lambda a: a.endpoints["queue"].p99_ms),
            "api_executed_p99_ms": _get(api, lambda a: a.endpoints["executed"].p99_ms),
            "api_p99_ms_4_clients": _get(api, lambda a: a.concurrent_p99_ms),
            "api_activity_p99_ms": _get(api, lambda a: a.endpoints["activity"].p99_ms),
            "hop_p50_ms": _get(self.relay, lambda r: r.hop_p50_ms),
            "executor_loaded_rss_mb": _get(best, lambda b: b.executor_rss_mb),
            "skeleton_runs_per_s": skeleton,
            "skeleton_vs_celery": skeleton / celery,
            "e2e_vs_skeleton": e2e / skeleton,
            "debounce_cost_vs_plain": _get(self.debounce, lambda d: d.ratio),
            "debounce_us_per_event": _get(self.debounce, lambda d: d.debounced_us),
            "matcher_core_wait_pct": _get(
                self.latency, lambda x: 100 * x.cores["matcher"][1] if x.cores else NAN
            ),
            "skeleton_p50_ms": _get(self.skeleton, lambda s: s.latency.p50_ms),
            "skeleton_p99_ms": _get(self.skeleton, lambda s: s.latency.p99_ms),
            "load_1m_before": self.load_before,
            "load_1m_after": self.load_after,
            "wall_s": self.wall_s,
        }
        return figures

    def result_line(self) -> str:
        parts = []
        for key, value in self.figures().items():
            if isinstance(value, float):
                text = "nan" if math.isnan(value) else f"{value:.{PRECISION.get(key, 2)}f}"
            else:
                text = str(value)
            parts.append(f"{key}={text}")
        return "RESULT " + " ".join(parts)

    def print_table(self) -> None:
        console = Console(width=170) if not Console().is_terminal else Console()
        f = self.figures()
        api_note = (
            f"{self.api_runs:,} runs stored"
            + (" (quick mode: 100,000, not 1,000,000)" if self.quick else "")
            + (f", inserted in {self.api.insert_s:.0f} s" if self.api else "")
        )
        table = Table(
            title=(
                f"Job Manager benchmark, {f['mode']} run, {self.started:%Y-%m-%d %H:%M} UTC, "
                f"{self.cores} cores, load average {self.load_before:.1f} -> "
                f"{self.load_after:.1f}, {self.wall_s:.0f} s"
                + (f", services set {self.settings}" if self.settings != "default" else "")
            ),
            title_justify="left",
        )
        for column in ("figure", "value", "target", "holds", "how / notes"):
            table.add_column(column, overflow="fold")

        def row(label: str, key: str | None, value: float, unit: str, note: str) -> None:
            digits = PRECISION.get(key or "", 1)
            shown = "n/a" if math.isnan(value) else f"{value:,.{digits}f} {unit}".strip()
            target, verdict = "", ""
            if key in TARGETS:
                comparison, bound = TARGETS[key]
                target = f"{comparison} {bound:g}"
                ok = holds(key, value)
                verdict = "n/a" if ok is None else ("yes" if ok else "NO")
            table.add_row(label, shown, target, verdict, note)

        row(
            "relay (aio-pika), per hop",
            "relay_msgs_per_s",
            f["relay_msgs_per_s"],
            "msg/s",
            self.relay.note() if self.relay else self._why("relay"),
        )
        celery_rows: tuple[tuple[QueueType, str, str], ...] = (
            ("classic", "Celery no-op", "celery_tasks_per_s"),
            ("quorum", "Celery no-op, quorum queue", "celery_quorum_tasks_per_s"),
        )
        for queue_type, label, key in celery_rows:
            baseline = self.celery.get(queue_type)
            note = baseline.note() if baseline else self._why(CELERY_SECTIONS[queue_type])
            row(label, key, f[key], "tasks/s", note)
        best = self.best
        for t in self.throughputs:
            mark = " (best)" if t is best and len(self.throughputs) > 1 else ""
            row(
                f"ours, e2e {t.setting}{mark}",
                "e2e_runs_per_s",
                t.runs_per_s,
                "runs/s",
                t.note() + f"; events published at {t.publish_per_s:,.0f}/s",
            )
        if not self.throughputs:
            row("ours, e2e", "e2e_runs_per_s", NAN, "", self._why("e2e throughput"))
        row("e2e / Celery", "e2e_vs_celery", f["e2e_vs_celery"], "x", "medians")
        row(
            "e2e / Celery, quorum queue",
            "e2e_vs_celery_quorum",
            f["e2e_vs_celery_quorum"],
            "x",
            "medians; the like-for-like comparison: both cross replicated queues with "
            "confirmed publishes",
        )
        row(
            "e2e / relay",
            "e2e_vs_relay",
            f["e2e_vs_relay"],
            "x",
            "per run of the no-op script due at once: 3 queue hops (events, work, results), "
            "2 confirmed notices, 2 transactions (4 and 3 through the gate)",
        )
        sk = self.skeleton
        row(
            "transport skeleton",
            "skeleton_runs_per_s",
            f["skeleton_runs_per_s"],
            "runs/s",
            sk.note() if sk else self._why("skeleton"),
        )
        row("skeleton / Celery", "skeleton_vs_celery", f["skeleton_vs_celery"], "x", "medians")
        row(
            "e2e / skeleton",
            "e2e_vs_skeleton",
            f["e2e_vs_skeleton"],
            "x",
            "the share of the messages' ceiling that ours reaches; the rest is the matcher's "
            "own work (ledger, matching) and the database",
        )
        lat = self.latency
        row(
            "event -> script start p50",
            "p50_ms",
            f["p50_ms"],
            "ms",
            lat.note() if lat else self._why("e2e latency"),
        )
        row("event -> script start p99", "p99_ms", f["p99_ms"], "ms", "same runs")
        row(
            "skeleton event -> start p50",
            "skeleton_p50_ms",
            f["skeleton_p50_ms"],
            "ms",
            sk.latency_note() if sk else self._why("skeleton"),
        )
        row(
            "skeleton event -> start p99",
            "skeleton_p99_ms",
            f["skeleton_p99_ms"],
            "ms",
            "same runs",
        )
        row(
            "interval lateness p95",
            "interval_late_ms_p95",
            f["interval_late_ms_p95"],
            "ms",
            self.interval.note() if self.interval else self._why("interval"),
        )
        m = self.matching
        row(
            "matcher plan(), 10 jobs",
            "match_cost_10_us",
            f["match_cost_10_us"],
            "us",
            m.note() if m else self._why("matching"),
        )
        row("matcher plan(), 10,000 jobs", "match_cost_10k_us", f["match_cost_10k_us"], "us", "")
        row("match cost 10k / 10", "match_cost_10k_vs_10", f["match_cost_10k_vs_10"], "x", "")
        d = self.debounce
        row(
            "debounced burst, per event",
            "debounce_us_per_event",
            f["debounce_us_per_event"],
            "us",
            d.note() if d else self._why("debounce"),
        )
        row(
            "debounced / plain burst",
            "debounce_cost_vs_plain",
            f["debounce_cost_vs_plain"],
            "x",
            "the same burst without debounce queues every event's run",
        )
        a = self.api
        row(
            "GET /queue p99",
            "api_queue_p99_ms",
            f["api_queue_p99_ms"],
            "ms",
            a.note("queue") if a else self._why("api"),
        )
        row(
            "GET /executed p99",
            "api_executed_p99_ms",
            f["api_executed_p99_ms"],
            "ms",
            a.note("executed") if a else "",
        )
        row(
            "GET /activity p99",
            "api_activity_p99_ms",
            f["api_activity_p99_ms"],
            "ms",
            a.note("activity") if a else "",
        )
        row(
            "admin list p99 (one client)",
            "api_p99_ms",
            f["api_p99_ms"],
            "ms",
            f"the worse endpoint, requests one at a time; {api_note}",
        )
        row(
            "admin list p99 (4 clients)",
            "api_p99_ms_4_clients",
            f["api_p99_ms_4_clients"],
            "ms",
            "the worse endpoint, 4 clients at once on the one admin process",
        )
        row(
            "executor idle RSS",
            "executor_idle_rss_mb",
            f["executor_idle_rss_mb"],
            "MB",
            self.memory.note() if self.memory else self._why("memory"),
        )
        row(
            "executor RSS after load",
            "executor_loaded_rss_mb",
            f["executor_loaded_rss_mb"],
            "MB",
            "with its Python worker processes (one per concurrency slot)",
        )
        console.print(table)
        for section, count in self.retried.items():
            console.print(
                f"{section}: measured again {count} time(s): the broker or the database went "
                "away under it (restarted by someone else's tests)"
            )
        for section, reason in self.failures.items():
            console.print(f"[red]not measured: {section}: {reason}[/red]")

    def _why(self, section: str) -> str:
        return self.failures.get(section, "not measured")

"""The matcher's Prometheus metrics (served on JOBMANAGER_METRICS_PORT)."""

from __future__ import annotations

from datetime import datetime

from prometheus_client import Counter, Gauge, Histogram

from jobmanager.core.messages import JobRequest, RunNotice
from jobmanager.store.outbox import Outbox

EVENTS = Counter("jobmanager_events", "Events by outcome", ["outcome"])
# `job_name`, not `job`: Prometheus keeps `job` for the scrape job.
RUNS = Counter("jobmanager_runs", "Run state changes", ["state", "job_name"])
RUN_SECONDS = Histogram(
    "jobmanager_run_duration_seconds",
    "Duration of finished attempts",
    ["job_name"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
DISPATCH_LAG = Histogram(
    "jobmanager_dispatch_lag_seconds",
    "How late a run is dispatched after its due time",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
)
LANE_BACKLOG = Gauge("jobmanager_lane_backlog", "Runs waiting in the queue")
PAUSED_JOBS = Gauge("jobmanager_jobs_paused", "Jobs paused (by an operator or the breaker)")
HELD_RUNS = Gauge("jobmanager_runs_held", "Lane heads waiting for their job's concurrency limit")
# Results that changed nothing: for an unknown run, a future attempt, an attempt already
# recorded, or a run not dispatched (the reasons `ledger_record` gives).
RESULTS_IGNORED = Counter(
    "jobmanager_results_ignored", "Results that changed nothing, by reason", ["reason"]
)


def observe_dispatched(work: list[JobRequest], now: datetime) -> None:
    for request in work:
        DISPATCH_LAG.observe(max(0.0, (now - request.not_before).total_seconds()))


def count_notices(notices: list[RunNotice]) -> None:
    for notice in notices:
        RUNS.labels(notice.state, notice.job).inc()


def count_published(outbox: Outbox, now: datetime) -> None:
    """What a published outbox changed: its notices' state changes, its dispatches' lag."""
    count_notices(outbox.notices)
    observe_dispatched(outbox.work, now)

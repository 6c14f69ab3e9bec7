"""The executor's Prometheus metrics (served on JOBMANAGER_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SCRIPT_FAILURES = Counter("jobmanager_script_failures", "Failed script runs", ["script"])
BUSY_SLOTS = Gauge("jobmanager_executor_busy_slots", "Scripts running now")
SLOTS = Gauge("jobmanager_executor_slots", "Scripts this executor may run at once")

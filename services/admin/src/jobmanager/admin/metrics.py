"""Prometheus metrics of the admin service: requests, rows per table, lane activity.

Table gauges are refreshed in the background (every `metrics_refresh_s`), so a scrape never
waits on a count over a large table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "jobmanager_admin_requests",
            "Admin API requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "jobmanager_admin_request_seconds",
            "Admin API request latency",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rows = Gauge("jobmanager_rows", "Rows per table", ["table"], registry=self.registry)
        self.lanes = Gauge(
            "jobmanager_lanes", "Lanes by activity", ["activity"], registry=self.registry
        )
        self.backlog = Gauge(
            "jobmanager_lane_backlog", "Runs waiting in the queue", registry=self.registry
        )

    def update_counts(self, counts: dict[str, int]) -> None:
        for table in ("jobs", "queue", "executed", "failed"):
            self.rows.labels(table).set(counts[table])
        self.lanes.labels("busy").set(counts["lanes_busy"])
        self.lanes.labels("waiting").set(counts["lanes_waiting"])
        self.backlog.set(counts["queued"])

    def install(self, app: FastAPI) -> None:
        @app.middleware("http")
        async def measure(
            request: Request, call_next: Callable[[Request], Awaitable[Response]]
        ) -> Response:
            start = time.perf_counter()
            status = 500
            try:
                response = await call_next(request)
                status = response.status_code
                return response
            finally:
                # The route's template, not the raw path: bounded label values.
                route: Any = request.scope.get("route")
                name = getattr(route, "path", "unmatched")
                self.requests.labels(request.method, name, str(status)).inc()
                self.latency.labels(request.method, name).observe(time.perf_counter() - start)

"""Prometheus metrics shared by the services, and the endpoint that serves them.

The matcher and the executors serve `/metrics` on `JOBMANAGER_METRICS_PORT` when it is set
(the admin serves its own on its HTTP port).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, start_http_server

log = logging.getLogger(__name__)

REDELIVERIES = Counter(
    "jobmanager_redeliveries",
    "Messages the broker delivered again (after a crash or a nack)",
    ["queue"],
)


def serve(port: int | None) -> None:
    """Serve the default registry on `port` (in a thread of its own); nothing if None."""
    if port is None:
        return
    start_http_server(port)
    log.info("metrics on :%d/metrics", port)

"""The Celery baseline's app: one no-op task, acks_late, results in Postgres.

`python -m bench.celery_app BROKER BACKEND QUEUE CONCURRENCY` runs its worker (prefork). The
app is built from arguments, not from the environment, so the driver and the worker agree on
it by construction.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

TASK = "bench.noop"


def make_app(*, broker: str, backend: str, queue: str) -> Any:
    """The app with Celery's defaults except what the comparison needs: late acks, the
    database result backend, a queue (and exchange) of the run's own, no remote control or
    events (they would declare queues of their own on the shared broker)."""
    app = Celery("bench", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name=TASK)  # type: ignore[untyped-decorator]
    def noop() -> None:
        return None

    return app


def main() -> int:
    broker, backend, queue, concurrency = sys.argv[1:5]
    app = make_app(broker=broker, backend=backend, queue=queue)
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={int(concurrency)}",
            "--loglevel=WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

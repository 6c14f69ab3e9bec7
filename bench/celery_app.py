"""The Celery baselines' app: one no-op task, acks_late, results in Postgres, on a classic
or a quorum queue.

`python -m bench.celery_app BROKER BACKEND QUEUE QUEUE_TYPE CONCURRENCY` runs its worker
(prefork). The app is built from arguments, not from the environment, so the driver and the
worker agree on it by construction.
"""

from __future__ import annotations

import sys
from typing import Any, Literal, get_args

from celery import Celery  # type: ignore[import-untyped]
from celery.worker.consumer import Consumer  # type: ignore[import-untyped]

TASK = "bench.noop"

QueueType = Literal["classic", "quorum"]
QUEUE_TYPES: tuple[QueueType, ...] = get_args(QueueType)


class _Consumer(Consumer):  # type: ignore[misc]
    """Celery's worker consumer without native delayed delivery.

    With quorum queues Celery's worker declares 28 queues and 29 exchanges of fixed names
    (`celery_delayed_*`) for countdown and ETA tasks. The baseline sends none, so they would
    take no part in the measurement; they would only stay behind on the shared broker,
    outside the run's own queue and exchange.
    """

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps = tuple(
            step
            for step in Consumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        )


def make_app(*, broker: str, backend: str, queue: str, queue_type: QueueType) -> Any:
    """The app with Celery's defaults except what the comparison needs: late acks, the
    database result backend, a queue (and exchange) of the run's own, no remote control or
    events (they would declare queues of their own on the shared broker).

    `queue_type="quorum"` is what a user who wants replicated queues runs: the default queue
    declared as a quorum queue and every publish confirmed by the broker (a quorum queue
    confirms once the message is on a majority of its replicas). Celery detects the quorum
    queue (`worker_detect_quorum_queues`, on by default) and uses per-consumer prefetch,
    since quorum queues have no global QoS.
    """
    app = Celery("bench", broker=broker, backend=backend, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_default_queue=queue,
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_default_queue_type=queue_type,
        broker_transport_options={"confirm_publish": queue_type == "quorum"},
        worker_consumer=_Consumer,
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
    broker, backend, queue, queue_type, concurrency = sys.argv[1:6]
    if queue_type not in QUEUE_TYPES:
        raise SystemExit(f"queue type {queue_type!r}: one of {', '.join(QUEUE_TYPES)}")
    app = make_app(broker=broker, backend=backend, queue=queue, queue_type=queue_type)
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

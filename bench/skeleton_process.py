"""`python -m bench.skeleton_process COUNTED LATENCIES PREFETCH`: the transport skeleton's
stand-in for our matcher (`bench.skeleton`).

It moves the messages our matcher moves for a run of the no-op script due at once, and does
nothing else: no database, no matching, no lanes. Each event from the events queue becomes a
`run.queued` notice on the runs exchange and a job request for the `noop` script on the work
queue, and the event is acked once both are confirmed; each result from the results queue
becomes a `run.succeeded` (or `run.failed`) notice, and the result is acked once that is
confirmed. Everything is persistent, many messages are in flight (PREFETCH per queue), and
the settings come from the environment like our services'.

For the driver it keeps COUNTED holding how many runs succeeded so far (a fixed-width number
rewritten in place), and on SIGTERM it writes LATENCIES: for each run that succeeded, the
event's publish time (its `occurred_at`, as a Unix time) and the milliseconds from there to
the script's start (the result's `started_at`) and to the stand-in's receipt of the event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from bench.traffic import message
from jobmanager.core.config import ServiceSettings
from jobmanager.core.messages import JobRef, JobRequest, RunNotice
from jobmanager.core.runtime import loop_factory
from jobmanager.core.topology import Topology

JOB = JobRef(id=1, name="bench-skeleton")
SCRIPT = "noop"
TIMEOUT_S = 60.0  # the executor's limit for the script; a no-op never comes near it
RESULT_KEYS = ("run.succeeded", "run.failed")


@dataclass
class Run:
    """What a result's notice and latency need of its event (our matcher reads the ledger)."""

    lane: str
    event_id: str
    published: float  # the event's occurred_at, Unix time
    received: float


@dataclass
class StandIn:
    topology: Topology
    work: AbstractExchange  # the default exchange of a confirming channel
    runs: AbstractExchange
    count_fd: int  # COUNTED, open
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    open_runs: dict[int, Run] = field(default_factory=dict)
    succeeded: int = 0
    latencies: list[tuple[float, float, float]] = field(default_factory=list)

    async def on_event(self, delivery: AbstractIncomingMessage) -> None:
        received = time.time()
        document = json.loads(delivery.body)
        lane, event_id = document["data"]["lane"], document["event_id"]
        run_id = next(self.ids)
        now = datetime.now(UTC)
        notice = RunNotice(
            run_id=run_id,
            state="queued",
            attempt=1,
            job=JOB.name,
            lane=lane,
            event_id=event_id,
            at=now,
        )
        request = JobRequest(
            run_id=run_id,
            attempt=1,
            job=JOB,
            script=SCRIPT,
            command=json.dumps(document["data"]["channel"]),
            timeout_s=TIMEOUT_S,
            lane=lane,
            event_id=event_id,
            not_before=now,
            requested_at=now,
            event=document,  # as our matcher attaches it, for executables that read it
        )
        published = datetime.fromisoformat(document["occurred_at"]).timestamp()
        self.open_runs[run_id] = Run(lane, event_id, published, received)
        # Both in flight at once, the notice first, as our matcher's outbox sends them.
        await asyncio.gather(
            self.runs.publish(
                message(notice.model_dump_json().encode()), notice.routing_key, mandatory=False
            ),
            self.work.publish(
                message(request.model_dump_json().encode()), self.topology.work_queue
            ),
        )
        await delivery.ack()

    async def on_result(self, delivery: AbstractIncomingMessage) -> None:
        if delivery.routing_key not in RESULT_KEYS:  # the executors' `executor.report`
            await delivery.ack()
            return
        result = json.loads(delivery.body)
        run = self.open_runs.pop(result["run_id"])
        notice = RunNotice(
            run_id=result["run_id"],
            state=result["status"],
            attempt=result["attempt"],
            job=JOB.name,
            lane=run.lane,
            event_id=run.event_id,
            result=result["result"],
            feedback=result["feedback"],
            at=datetime.now(UTC),
        )
        await self.runs.publish(
            message(notice.model_dump_json().encode()), notice.routing_key, mandatory=False
        )
        await delivery.ack()
        if result["status"] == "succeeded":
            self.succeeded += 1
            # One pwrite of the page cache (under a microsecond): no file is created or
            # renamed per run, and the driver sees the count at once.
            os.pwrite(self.count_fd, b"%20d" % self.succeeded, 0)
            started = datetime.fromisoformat(result["started_at"]).timestamp()
            self.latencies.append(
                (
                    run.published,
                    (started - run.published) * 1000,
                    (run.received - run.published) * 1000,
                )
            )


async def serve(counted: Path, latencies: Path, prefetch: int) -> None:
    settings = ServiceSettings()
    topology = Topology.from_settings(settings)
    connection = await aio_pika.connect(settings.amqp_url)
    await topology.declare(await connection.channel())  # as our services do at start
    publishing = await connection.channel(publisher_confirms=True)
    stand_in = StandIn(
        topology,
        publishing.default_exchange,
        await publishing.get_exchange(topology.runs_exchange, ensure=False),
        os.open(counted, os.O_RDWR | os.O_CREAT | os.O_TRUNC),
    )
    os.pwrite(stand_in.count_fd, b"%20d" % 0, 0)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # One channel per consumer, as our matcher has; the results queue last (the driver waits
    # for its consumer). aiormq runs each delivery's callback in a task of its own already:
    # up to the prefetch are in flight at once.
    for queue_name, handle in (
        (topology.events_queue, stand_in.on_event),
        (topology.results_queue, stand_in.on_result),
    ):
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(queue_name, ensure=False)
        await queue.consume(handle)
    await stop.wait()
    latencies.write_text(json.dumps(stand_in.latencies))
    with contextlib.suppress(Exception):
        await connection.close()


def main() -> int:
    counted, latencies, prefetch = sys.argv[1:4]
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(Path(counted), Path(latencies), int(prefetch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The delay stage with the real broker, and the gate's timing with a real matcher.

Requests delayed 30 s, 5 s, 1 s and 0.1 s, published in that (reverse) order, must reach the
work queue in due order and at most 50 ms after they are due: no head-of-line blocking.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.broker import Publisher
from jobmanager.core.messages import Event, JobRef, JobRequest
from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import PlannedRun
from jobmanager.matcher.config import MatcherSettings
from jobmanager.matcher.service import serve
from jobmanager.store import ledger
from jobmanager.store.models import Run

DELAYS_S = (30.0, 5.0, 1.0, 0.1)
LATE_LIMIT_S = 0.050


async def _runs_due_at(engine: AsyncEngine, delays: tuple[float, ...]) -> list[JobRequest]:
    """One run per delay (no lane), scheduled `delay` from now, as the ledger does it."""
    now = datetime.now(UTC)
    event = Event(event_id=uuid.uuid4().hex, event_type="test.delay")
    planned = [
        PlannedRun(job_id=None, job_name=f"delay-{d}", script="noop", command="", lane=None)
        for d in delays
    ]
    async with engine.begin() as conn:
        done = await ledger.enqueue(conn, [(event, planned)], interval_s=0, now=now)
        requests = []
        for request, delay in zip(done.outbox.requests, delays, strict=True):
            due = datetime.now(UTC) + timedelta(seconds=delay)
            await conn.execute(update(Run).where(Run.id == request.run_id).values(not_before=due))
            requests.append(request.model_copy(update={"not_before": due}))
    return requests


async def test_delays_come_due_on_time_without_head_of_line_blocking(
    amqp: AbstractRobustConnection,
    topology: Topology,
    engine: AsyncEngine,
    database_url: str,
    amqp_url: str,
) -> None:
    settings = MatcherSettings(
        amqp_url=amqp_url,
        database_url=database_url,
        namespace=topology.namespace,
        events_exchange=topology.events_exchange,
    )
    stop = asyncio.Event()
    matcher = asyncio.create_task(serve(settings, stop=stop))
    arrivals: dict[int, datetime] = {}
    channel = await amqp.channel()
    work = await channel.get_queue(topology.work_queue)

    async def on_work(message: AbstractIncomingMessage) -> None:
        request = JobRequest.model_validate_json(message.body)
        arrivals[request.run_id] = datetime.now(UTC)
        await message.ack()

    await work.consume(on_work)
    try:
        await asyncio.sleep(1.0)  # the matcher is consuming
        publisher = await Publisher.open(amqp, topology)
        requests = await _runs_due_at(engine, DELAYS_S)
        for request in requests:  # 30 s first, 0.1 s last
            await publisher.schedule(request, datetime.now(UTC))
        deadline = asyncio.get_running_loop().time() + max(DELAYS_S) + 10
        while len(arrivals) < len(requests) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await matcher
    assert len(arrivals) == len(requests), "every request came due"
    lateness = {r.not_before: (arrivals[r.run_id] - r.not_before).total_seconds() for r in requests}
    for due, late in lateness.items():
        assert 0 <= late <= LATE_LIMIT_S, f"due at {due}: {late * 1000:.1f} ms late"
    order = sorted(requests, key=lambda r: arrivals[r.run_id])
    assert [r.run_id for r in order] == [r.run_id for r in reversed(requests)]


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.fault
async def test_delayed_requests_survive_a_broker_restart(amqp_url: str, topology: Topology) -> None:
    import aio_pika

    connection = await aio_pika.connect_robust(amqp_url)
    publisher = await Publisher.open(connection, topology)
    now = datetime.now(UTC)
    request = JobRequest(
        run_id=1,
        attempt=1,
        job=JobRef(id=None, name="restart"),
        script="noop",
        command="",
        timeout_s=5,
        lane=None,
        not_before=now + timedelta(seconds=6),
        requested_at=now,
    )
    await publisher.schedule(request, now)
    await connection.close()
    try:
        _rabbitmqctl("stop_app")
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        due = await channel.get_queue(topology.due_queue)
        message = None
        for _ in range(200):
            message = await due.get(fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None, "the delayed request survived the restart and came due"
        assert JobRequest.model_validate_json(message.body).job.name == "restart"
        await message.ack()
    finally:
        await connection.close()

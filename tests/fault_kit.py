"""Helpers of the fault suite. Each test starts its own stack (real processes, real broker and
database), disturbs it, and proves that nothing was lost or duplicated.

Upkeep runs every second with short grace periods, so that repairs happen within a test's
time. Every test reports its figures (events, runs, lost, duplicates, redeliveries, recovery
time) as one JSON line in `$JOBMANAGER_FAULT_REPORT` (default `.jobmanager/fault-report.jsonl`)
and prints them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from sqlalchemy import func, select
from stack import Stack

from jobmanager.core.messages import Event
from jobmanager.jobs.spec import JobSpec
from jobmanager.store.models import Run

UPKEEP = {
    "JOBMANAGER_LANE_CHECK_S": "1",
    "JOBMANAGER_LANE_GRACE_S": "5",
    "JOBMANAGER_RUNNING_GRACE_S": "5",
    "JOBMANAGER_DISPATCH_GRACE_S": "5",
    "JOBMANAGER_LOG_LEVEL": "INFO",
}
REPORT = Path(os.environ.get("JOBMANAGER_FAULT_REPORT", ".jobmanager/fault-report.jsonl"))


async def kill_and_restart_matcher(stack: Stack) -> float:
    """SIGKILL the matcher and start it again; seconds until it consumes again."""
    before = stack.log("matcher").count("consuming")
    stack.processes["matcher"].send_signal(signal.SIGKILL)
    stack.processes["matcher"].wait(10)
    killed = time.monotonic()
    stack.start("matcher", "jobmanager.matcher")
    while stack.log("matcher").count("consuming") <= before:
        await asyncio.sleep(0.05)
    return round(time.monotonic() - killed, 2)


def report(scenario: str, **figures: Any) -> None:
    """Record a scenario's figures (for docs/RELIABILITY.md) and show them."""
    line = {"scenario": scenario, **figures}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a") as out:
        out.write(json.dumps(line) + "\n")
    print(f"\nFAULT {json.dumps(line)}")


async def publish_confirmed(
    amqp_url: str, stack: Stack, events: list[Event], *, concurrency: int = 50
) -> int:
    """Publish events on a connection of their own, each until the broker confirms it (so a
    broker restart only delays them); returns how many publishes had to be repeated."""
    connection = await aio_pika.connect_robust(amqp_url)
    repeats = 0
    semaphore = asyncio.Semaphore(concurrency)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(stack.topology.events_exchange)

        async def send(event: Event) -> None:
            nonlocal repeats
            body = event.model_dump_json().encode()
            async with semaphore:
                while True:
                    try:
                        await exchange.publish(
                            aio_pika.Message(
                                body,
                                message_id=event.event_id,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            event.event_type,
                            timeout=10,
                        )
                        return
                    except Exception:
                        repeats += 1
                        await asyncio.sleep(0.5)

        await asyncio.gather(*(send(e) for e in events))
    finally:
        # Closing a robust connection that is reconnecting to a stopped broker can wait
        # for ever; a failed test must still end.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 10)
    return repeats


def events_for(
    spec: JobSpec, count: int, *, lanes: int = 50, data: dict[str, Any] | None = None
) -> list[Event]:
    """Events of the job's type, spread over `lanes` lanes (`data.lane`)."""
    return [
        Event(
            event_id=f"{spec.name}-{n}-{uuid.uuid4().hex[:6]}",
            event_type=spec.trigger.event_type,
            data={"lane": f"lane-{n % lanes}", "n": n, **(data or {})},
        )
        for n in range(count)
    ]


async def settle(stack: Stack, expected: int, timeout: float) -> dict[str, int]:
    """Wait until `expected` runs exist and none is in the queue; the count per state."""
    deadline = time.monotonic() + timeout
    while True:
        async with stack.engine.connect() as conn:
            states = dict(
                (await conn.execute(select(Run.state, func.count()).group_by(Run.state))).all()
            )
        total = sum(states.values())
        waiting = sum(states.get(s, 0) for s in ("queued", "dispatched", "running"))
        if total >= expected and waiting == 0:
            return {str(k): int(v) for k, v in states.items()}
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {timeout} s: {states} (want {expected})")
        await asyncio.sleep(0.25)


async def duplicates(stack: Stack) -> int:
    """Runs beyond one per (event, job): what the ledger must never hold."""
    async with stack.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Run.event_id, Run.job_name, func.count())
                .group_by(Run.event_id, Run.job_name)
                .having(func.count() > 1)
            )
        ).all()
    return sum(int(r[2]) - 1 for r in rows)


async def missing(stack: Stack, events: list[Event], jobs: list[JobSpec]) -> int:
    """(event, job) pairs that have no run: lost work."""
    async with stack.engine.connect() as conn:
        have = {
            (r.event_id, r.job_name)
            for r in (await conn.execute(select(Run.event_id, Run.job_name))).all()
        }
    return sum((e.event_id, j.name) not in have for e in events for j in jobs)


async def redeliveries(stack: Stack, *names: str) -> int:
    """Redeliveries the named processes counted (their metrics endpoints)."""
    total = 0
    async with httpx.AsyncClient(timeout=5) as client:
        for name in names:
            try:
                text = (await client.get(f"http://127.0.0.1:{stack.metrics[name]}/metrics")).text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                if line.startswith("jobmanager_redeliveries_total{"):
                    total += int(float(line.rsplit(" ", 1)[1]))
    return total


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=180)


def start_broker() -> None:
    """Start the RabbitMQ server after `rabbitmqctl stop`, and wait until it serves.

    `await_startup` fails (exit 69) while the freshly started node is not yet reachable by
    the CLI, so it is asked again until it answers.
    """
    subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True, timeout=60)
    deadline = time.monotonic() + 180
    while True:
        done = subprocess.run(
            ["rabbitmqctl", "await_startup"], check=False, capture_output=True, timeout=180
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"RabbitMQ did not start: {done.stderr.decode()[-500:]}")
        time.sleep(1)


def noop(stack: Stack, *, lane: str | None) -> JobSpec:
    return stack.job(script="noop", lane=lane)

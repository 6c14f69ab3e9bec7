"""The broker and the database go away in the middle of a stream, and come back.

These tests stop the machine's RabbitMQ or Postgres; each starts it again before it ends,
whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable

import pytest
from admin_kit import admin_settings, running
from fault_kit import (
    duplicates,
    events_for,
    missing,
    publish_confirmed,
    rabbitmqctl,
    redeliveries,
    report,
    settle,
    start_broker,
)
from stack import Stack

pytestmark = pytest.mark.fault


async def _ready(stack: Stack, executors: int) -> None:
    """Until the services consume again (the broker may still be starting)."""
    while True:
        with contextlib.suppress(Exception):
            if (
                await stack.consumers(stack.topology.events_queue) == 1
                and await stack.consumers(stack.topology.work_queue) == executors
            ):
                return
        await asyncio.sleep(0.2)


async def _stream_through(
    stack: Stack,
    amqp_url: str,
    outage: Callable[[], None],
    restore: Callable[[], None],
    scenario: str,
) -> None:
    lanes = stack.job(script="noop", lane="{{ data.lane }}")
    default = stack.job(script="noop", lane="default", trigger=lanes.trigger.model_dump())
    await stack.add(lanes, default)
    events = events_for(lanes, 2000, lanes=200)
    start = time.monotonic()
    publishing = asyncio.create_task(publish_confirmed(amqp_url, stack, events))
    try:
        await asyncio.sleep(2.0)
        try:
            await asyncio.to_thread(outage)
            await asyncio.sleep(3.0)
        finally:
            await asyncio.to_thread(restore)
        restored = time.monotonic()
        await asyncio.wait_for(_ready(stack, 2), 120)
        recovery = round(time.monotonic() - restored, 1)
        repeats = await publishing
    finally:
        publishing.cancel()
    states = await settle(stack, 2 * len(events), timeout=300)
    assert states == {"succeeded": 2 * len(events)}, states
    lost = await missing(stack, events, [lanes, default])
    dups = await duplicates(stack)
    assert lost == 0 and dups == 0
    report(
        scenario,
        events=len(events),
        runs=2 * len(events),
        lost=lost,
        duplicates=dups,
        republished_by_client=repeats,
        redeliveries=await redeliveries(stack, "matcher", "executor-1", "executor-2"),
        recovery_s=recovery,
        seconds=round(time.monotonic() - start, 1),
    )


@pytest.mark.stack(executors=2, concurrency=4)
async def test_broker_app_restart_during_a_stream(fault_stack: Stack, amqp_url: str) -> None:
    await _stream_through(
        fault_stack,
        amqp_url,
        outage=lambda: rabbitmqctl("stop_app"),
        restore=_start_app,
        scenario="broker stop_app/start_app during 2000 events (2 jobs, 200 lanes + default)",
    )


def _start_app() -> None:
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")


@pytest.mark.stack(executors=2, concurrency=4)
async def test_broker_server_stop_and_start_during_a_stream(
    fault_stack: Stack, amqp_url: str
) -> None:
    await _stream_through(
        fault_stack,
        amqp_url,
        outage=lambda: rabbitmqctl("stop"),
        restore=start_broker,
        scenario="broker server stop/start during 2000 events (2 jobs, 200 lanes + default)",
    )


def _pg(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    args = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action]
    if action == "stop":
        args += ["-m", "fast"]
    subprocess.run(args, check=True, capture_output=True, timeout=120)


@pytest.mark.stack(
    executors=1,
    concurrency=1,
    # Nothing else touches the database meanwhile: the reload is the first use of the
    # matcher's pooled connection that died with the restart.
    env={"JOBMANAGER_LANE_CHECK_S": "600", "JOBMANAGER_CATALOGUE_REFRESH_S": "600"},
)
async def test_a_jobs_change_right_after_a_postgres_restart_is_loaded(fault_stack: Stack) -> None:
    stack = fault_stack
    first = stack.job(script="noop", lane=None)
    await stack.add(first)
    try:
        await asyncio.to_thread(_pg, "stop")
    finally:
        await asyncio.to_thread(_pg, "start")
    await stack.engine.dispose()  # the test's own connections died too
    second = stack.job(script="noop", lane=None)
    started = time.monotonic()
    await stack.add(second)  # waits (30 s at most) for the matcher to reload on the broadcast
    await stack.publish(second)
    [run] = await stack.ended(second, 1)
    assert run.state == "succeeded"
    assert "reloading the catalogue" in stack.log("matcher"), "the dead connection was met"
    report(
        "a jobs change broadcast right after a Postgres restart",
        runs=1,
        lost=0,
        reload_s=round(time.monotonic() - started, 1),
    )


@pytest.mark.stack(executors=2, concurrency=4)
async def test_postgres_restart_during_a_stream(fault_stack: Stack, amqp_url: str) -> None:
    stack = fault_stack
    job = stack.job(script="noop", lane="{{ data.lane }}")
    await stack.add(job)
    events = events_for(job, 2000, lanes=200)
    settings = admin_settings(amqp_url, stack.database_url, stack.topology)
    statuses: list[int] = []
    start = time.monotonic()
    async with running(settings, stack.engine) as admin:
        client = admin.client
        publishing = asyncio.create_task(publish_confirmed(amqp_url, stack, events))
        try:
            await asyncio.sleep(2.0)
            try:
                await asyncio.to_thread(_pg, "stop")
                for _ in range(10):
                    statuses.append((await client.get("/readyz")).status_code)
                    statuses.append((await client.get("/api/v1/queue")).status_code)
                    await asyncio.sleep(0.3)
            finally:
                await asyncio.to_thread(_pg, "start")
            restored = time.monotonic()
            while (await client.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.1)
            recovery = round(time.monotonic() - restored, 1)
            assert (await client.get("/api/v1/queue")).status_code == 200
            await publishing
        finally:
            publishing.cancel()
    assert set(statuses) == {503}, statuses
    states = await settle(stack, len(events), timeout=300)
    assert states == {"succeeded": len(events)}, states
    assert await missing(stack, events, [job]) == 0 and await duplicates(stack) == 0
    report(
        "postgres stop/start during 2000 events",
        events=len(events),
        runs=len(events),
        lost=0,
        duplicates=0,
        admin_answers_while_down=sorted(set(statuses)),
        admin_recovery_s=recovery,
        redeliveries=await redeliveries(stack, "matcher", "executor-1", "executor-2"),
        seconds=round(time.monotonic() - start, 1),
    )

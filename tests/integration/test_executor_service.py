"""The executor service in-process against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from jobmanager.core.messages import JobRef, JobRequest
from jobmanager.core.topology import ERROR_HEADER, Topology
from jobmanager.executor.config import ExecutorSettings
from jobmanager.executor.service import serve


def job_request(
    script: str, command: str = "", *, run_id: int = 1, timeout_s: float = 10.0
) -> JobRequest:
    now = datetime.now(UTC)
    return JobRequest(
        run_id=run_id,
        attempt=1,
        job=JobRef(id=1, name="job"),
        script=script,
        command=command,
        timeout_s=timeout_s,
        lane="default",
        event_id="ev-1",
        not_before=now,
        requested_at=now,
    )


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    directory = tmp_path / "scripts"
    directory.mkdir()
    (directory / "ok.py").write_text("def run(command, ctx):\n    return 3, 'ok ' + command\n")
    (directory / "fails.py").write_text(
        textwrap.dedent("""
        def run(command, ctx):
            return 2, "pod service unreachable"
    """)
    )
    (directory / "slow.py").write_text(
        textwrap.dedent("""
        import time
        def run(command, ctx):
            time.sleep(2)
            return 3, "slept"
    """)
    )
    return directory


@pytest.fixture
def settings(amqp_url: str, topology: Topology, scripts: Path) -> ExecutorSettings:
    return ExecutorSettings(
        amqp_url=amqp_url,
        namespace=topology.namespace,
        events_exchange=topology.events_exchange,
        scripts_dir=scripts,
        concurrency=2,
        executor_id="exec-test",
    )


class Results:
    """Everything published on the results exchange, through a temporary queue."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue
        self.messages: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def next(self, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        message = await asyncio.wait_for(self.messages.get(), timeout)
        return message.routing_key or "", json.loads(message.body)


@pytest.fixture
async def results(amqp: AbstractRobustConnection, topology: Topology) -> AsyncIterator[Results]:
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(topology.results_exchange, "run.*")
    collected = Results(queue)
    tag = await queue.consume(collected.messages.put, no_ack=True)
    try:
        yield collected
    finally:
        await queue.cancel(tag)
        await channel.close()


@asynccontextmanager
async def executor(settings: ExecutorSettings) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def send(amqp: AbstractRobustConnection, topology: Topology, body: bytes) -> None:
    channel = await amqp.channel()
    await channel.default_exchange.publish(
        aio_pika.Message(body, content_type="application/json"), topology.work_queue
    )
    await channel.close()


async def work_queue_depth(amqp: AbstractRobustConnection, topology: Topology) -> int:
    channel = await amqp.channel()
    queue = await channel.declare_queue(topology.work_queue, passive=True)
    await channel.close()
    count = queue.declaration_result.message_count
    return count or 0


async def test_a_quick_script_is_reported_once_by_its_result(
    amqp: AbstractRobustConnection,
    topology: Topology,
    settings: ExecutorSettings,
    results: Results,
) -> None:
    # A delay far longer than the script, so that a slow, shared machine (the first run
    # starts a worker process) cannot turn the quick script into a slow one.
    settings = settings.model_copy(update={"report_started_after_s": 5.0})
    async with executor(settings):
        await send(
            amqp, topology, job_request("ok", "ESPN-HD", run_id=11).model_dump_json().encode()
        )
        key, result = await results.next()
        assert key == "run.succeeded", "no run.started for a script done within the delay"
        assert (result["run_id"], result["result"], result["status"]) == (11, 3, "succeeded")
        assert result["feedback"] == "ok ESPN-HD"
        assert result["executor"] == "exec-test"
        assert result["finished_at"] >= result["started_at"]
        await asyncio.sleep(0.2)
        assert results.messages.empty()
    assert await work_queue_depth(amqp, topology) == 0


async def test_every_start_is_reported_first_when_the_delay_is_zero(
    amqp: AbstractRobustConnection,
    topology: Topology,
    settings: ExecutorSettings,
    results: Results,
) -> None:
    settings = settings.model_copy(update={"report_started_after_s": 0.0})
    async with executor(settings):
        await send(
            amqp, topology, job_request("ok", "ESPN-HD", run_id=11).model_dump_json().encode()
        )
        key, started = await results.next()
        assert key == "run.started"
        assert (started["run_id"], started["attempt"], started["executor"]) == (11, 1, "exec-test")
        key, result = await results.next()
        assert (key, result["run_id"]) == ("run.succeeded", 11)
        assert result["started_at"] == started["started_at"]


async def test_a_failing_script_yields_failed_with_its_feedback(
    amqp: AbstractRobustConnection,
    topology: Topology,
    settings: ExecutorSettings,
    results: Results,
) -> None:
    async with executor(settings):
        await send(amqp, topology, job_request("fails", run_id=12).model_dump_json().encode())
        await send(amqp, topology, job_request("missing", run_id=13).model_dump_json().encode())
        outcomes = {}
        while len(outcomes) < 2:
            key, body = await results.next()
            if key != "run.started":
                outcomes[body["run_id"]] = (key, body["result"], body["feedback"])
    assert outcomes[12] == ("run.failed", 2, "pod service unreachable")
    key, code, feedback = outcomes[13]
    assert (key, code) == ("run.failed", 2)
    assert feedback.startswith("unknown script 'missing'")
    assert feedback.endswith("known scripts: fails, ok, slow")


async def test_garbage_is_parked_and_the_consumer_goes_on(
    amqp: AbstractRobustConnection,
    topology: Topology,
    settings: ExecutorSettings,
    results: Results,
) -> None:
    async with executor(settings):
        await send(amqp, topology, b"this is not json")
        await send(amqp, topology, b'{"run_id": "seven", "attempt": 0}')
        await send(amqp, topology, job_request("ok", "after", run_id=14).model_dump_json().encode())
        key, result = await results.next()
        if key == "run.started":  # the script took longer than 50 ms on a busy machine
            key, result = await results.next()
        assert (key, result["run_id"], result["feedback"]) == ("run.succeeded", 14, "ok after")
    channel = await amqp.channel()
    dead = await channel.declare_queue(topology.dead_queue, passive=True)
    parked = []
    for _ in range(2):
        message = await dead.get(timeout=5, fail=True)
        assert message is not None
        await message.ack()
        parked.append((message.body, str((message.headers or {})[ERROR_HEADER])))
    await channel.close()
    assert parked[0][0] == b"this is not json"
    assert parked[0][1].startswith("invalid job request: ")
    assert "Invalid JSON" in parked[0][1]
    assert parked[1][1].startswith("invalid job request: run_id: ")
    assert "attempt: " in parked[1][1]


async def test_graceful_stop_finishes_the_run_in_flight(
    amqp: AbstractRobustConnection,
    topology: Topology,
    settings: ExecutorSettings,
    results: Results,
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop=stop))
    await send(amqp, topology, job_request("slow", run_id=15).model_dump_json().encode())
    key, _ = await results.next()
    assert key == "run.started"
    stop.set()
    # A request sent after the stop is left for another executor.
    await send(amqp, topology, job_request("ok", run_id=16).model_dump_json().encode())
    await asyncio.wait_for(task, 15)
    key, result = await results.next(timeout=1)
    assert (key, result["run_id"], result["feedback"]) == ("run.succeeded", 15, "slept")
    assert results.messages.empty()
    assert task.result() is None
    # The finished request was acked; only the late one waits in the queue.
    assert await work_queue_depth(amqp, topology) == 1
    channel = await amqp.channel()
    work = await channel.declare_queue(topology.work_queue, passive=True)
    late = await work.get(timeout=5, fail=True)
    assert late is not None
    assert json.loads(late.body)["run_id"] == 16
    await late.ack()
    await channel.close()


async def test_cancelling_serve_kills_the_run_and_leaves_the_request_queued(
    amqp: AbstractRobustConnection,
    topology: Topology,
    settings: ExecutorSettings,
    results: Results,
    scripts: Path,
) -> None:
    pidfile = scripts.parent / "worker.pid"
    (scripts / "hangs.py").write_text(
        textwrap.dedent(f"""
        import os, time
        def run(command, ctx):
            with open({str(pidfile)!r}, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)
    """)
    )
    task = asyncio.create_task(serve(settings, stop=asyncio.Event()))
    await send(amqp, topology, job_request("hangs", run_id=17).model_dump_json().encode())
    key, _ = await results.next()
    assert key == "run.started"
    while not (pidfile.exists() and pidfile.read_text()):  # the script itself has begun
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    worker = int(pidfile.read_text())
    for _ in range(100):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail(f"the worker {worker} survived")
    assert results.messages.empty()  # no result: the request is redelivered instead
    assert await work_queue_depth(amqp, topology) == 1

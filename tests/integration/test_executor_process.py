"""`python -m jobmanager.executor` as a real process: signals, exit status, startup errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from jobmanager.core.messages import JobRef, JobRequest
from jobmanager.core.topology import Topology
from jobmanager.executor.pool import PACKAGE_ROOT


def environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBMANAGER_")}
    # The package is importable however the virtual environment was installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    env.update({f"JOBMANAGER_{name.upper()}": value for name, value in values.items()})
    return env


async def start(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "jobmanager.executor",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_sigterm_lets_the_run_finish_and_exits_0(
    amqp_url: str, amqp: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "slow.py").write_text(
        textwrap.dedent("""
        import time
        def run(command, ctx):
            time.sleep(2)
            return 3, "finished despite SIGTERM"
    """)
    )
    channel = await amqp.channel()
    results = await channel.declare_queue(exclusive=True, auto_delete=True)
    await results.bind(topology.results_exchange, "run.*")
    received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    await results.consume(received.put, no_ack=True)
    now = datetime.now(UTC)
    request = JobRequest(
        run_id=21,
        attempt=1,
        job=JobRef(id=1, name="job"),
        script="slow",
        command="",
        timeout_s=30,
        lane="default",
        not_before=now,
        requested_at=now,
    )
    await channel.default_exchange.publish(
        aio_pika.Message(request.model_dump_json().encode()), topology.work_queue
    )
    proc = await start(
        environment(
            amqp_url=amqp_url,
            namespace=topology.namespace,
            events_exchange=topology.events_exchange,
            scripts_dir=str(scripts),
            executor_id="exec-process",
        ),
        "--concurrency",
        "2",
    )
    try:
        started = await asyncio.wait_for(received.get(), 30)
        assert started.routing_key == "run.started"
        proc.send_signal(signal.SIGTERM)
        finished = await asyncio.wait_for(received.get(), 10)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert finished.routing_key == "run.succeeded"
    body = json.loads(finished.body)
    assert (body["run_id"], body["feedback"], body["executor"]) == (
        21,
        "finished despite SIGTERM",
        "exec-process",
    )
    log = stderr.decode()
    assert "SIGTERM: stopping after the runs in flight" in log
    assert "executor exec-process stopped" in log
    assert "Traceback" not in log
    await channel.close()
    check = await amqp.channel()
    work = await check.declare_queue(topology.work_queue, passive=True)
    assert work.declaration_result.message_count == 0
    await check.close()


async def test_a_second_sigterm_aborts_the_run_and_leaves_it_queued(
    amqp_url: str, amqp: AbstractRobustConnection, topology: Topology, tmp_path: Path
) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    pidfile = tmp_path / "script.pid"
    (scripts / "hangs.py").write_text(
        textwrap.dedent(f"""
        import os, time
        def run(command, ctx):
            with open({str(pidfile)!r}, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(60)
    """)
    )
    now = datetime.now(UTC)
    request = JobRequest(
        run_id=22,
        attempt=1,
        job=JobRef(id=1, name="job"),
        script="hangs",
        command="",
        timeout_s=60,
        lane="default",
        not_before=now,
        requested_at=now,
    )
    channel = await amqp.channel()
    await channel.default_exchange.publish(
        aio_pika.Message(request.model_dump_json().encode()), topology.work_queue
    )
    proc = await start(
        environment(
            amqp_url=amqp_url,
            namespace=topology.namespace,
            events_exchange=topology.events_exchange,
            scripts_dir=str(scripts),
        )
    )
    try:
        for _ in range(1500):
            if pidfile.exists() and pidfile.read_text():
                break
            await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode()
    assert "SIGTERM again: aborting the runs in flight" in stderr.decode()
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)
        raise AssertionError("the script's worker survived the executor")
    work = await channel.declare_queue(topology.work_queue, passive=True)
    assert work.declaration_result.message_count == 1  # redelivered to the next executor
    await channel.close()


async def test_a_missing_broker_is_one_clear_line(tmp_path: Path) -> None:
    proc = await start(
        environment(amqp_url="amqp://guest:secret@127.0.0.1:1/", scripts_dir=str(tmp_path))
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: RabbitMQ is not answering at amqp://guest:***@127.0.0.1:1/")
    assert "secret" not in lines[0]


async def test_a_missing_scripts_directory_is_one_clear_line(tmp_path: Path) -> None:
    proc = await start(environment(scripts_dir=str(tmp_path / "nowhere")))
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert stderr.decode().strip() == (
        f"error: the scripts directory {tmp_path / 'nowhere'} does not exist; "
        "set JOBMANAGER_SCRIPTS_DIR to a directory of scripts"
    )


async def test_invalid_settings_are_one_clear_line() -> None:
    proc = await start(environment(concurrency="0"))
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    assert stderr.decode().strip().startswith("error: invalid executor configuration: concurrency:")

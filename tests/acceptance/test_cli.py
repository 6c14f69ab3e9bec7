"""The `jobmanager` command, run as a real process against the real broker and database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.topology import Topology
from jobmanager.store.models import Executor, Job, Run, Setting
from jobmanager.testkit.databases import database_on, drop
from jobmanager.testkit.ports import free_port


def jobmanager(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobmanager.cli.main", *args],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def service_env(amqp_url: str, database_url: str, topology: Topology) -> dict[str, str]:
    return {
        "JOBMANAGER_ADMIN_PORT": str(free_port()),
        "JOBMANAGER_AMQP_URL": amqp_url,
        "JOBMANAGER_DATABASE_URL": database_url,
        "JOBMANAGER_NAMESPACE": topology.namespace,
        "JOBMANAGER_EVENTS_EXCHANGE": topology.events_exchange,
    }


async def test_migrate_creates_a_missing_database(postgres_url: str) -> None:
    name = f"jmtest_new_{uuid.uuid4().hex[:8]}"
    url = database_on(postgres_url, name)
    try:
        result = await asyncio.to_thread(
            jobmanager, "migrate", env={"JOBMANAGER_DATABASE_URL": url}
        )
        assert result.returncode == 0, result.stderr
        assert "schema is up to date" in result.stdout
        conn = await asyncpg.connect(url)
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        await conn.close()
        assert {"jobs", "events", "runs", "attempts", "lanes", "settings"} <= tables
    finally:
        await drop(postgres_url, name)


JOBS = """
settings:
  queue: {interval_s: 1.5}
jobs:
  - name: first
    trigger: {event_type: channel.updated}
    script: noop
  - name: second
    trigger: {event_type: "channel.*", conditions: [{path: data.x, op: gt, value: 3}]}
    script: ipx_update
    lane: null
"""


async def report_executor(
    engine: AsyncEngine, scripts: list[str], *, seen: datetime | None = None
) -> None:
    """What an executor's report leaves in the database: its scripts, seen at `seen`."""
    when = seen or datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            insert(Executor).values(
                id=f"exec-{uuid.uuid4().hex[:6]}",
                scripts=scripts,
                concurrency=4,
                busy=0,
                started_at=when,
                last_seen_at=when,
            )
        )


async def test_apply_is_idempotent_and_prunes(
    tmp_path: Path, amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    env = service_env(amqp_url, database_url, topology)
    await report_executor(engine, ["noop", "ipx_update"])
    file = tmp_path / "jobs.yaml"
    file.write_text(JOBS)
    first = await asyncio.to_thread(jobmanager, "apply", str(file), env=env)
    assert first.returncode == 0, first.stderr
    assert "2 created, 0 updated, 0 unchanged, 0 deleted" in first.stdout
    again = await asyncio.to_thread(jobmanager, "apply", str(file), env=env)
    assert "0 created, 0 updated, 2 unchanged, 0 deleted" in again.stdout
    file.write_text(JOBS.split("  - name: second")[0].replace("script: noop", "script: ipx_update"))
    pruned = await asyncio.to_thread(jobmanager, "apply", str(file), "--prune", env=env)
    assert "0 created, 1 updated, 0 unchanged, 1 deleted" in pruned.stdout
    async with engine.connect() as conn:
        rows = (await conn.execute(select(Job.name, Job.script))).all()
        queue = await conn.scalar(select(Setting.value).where(Setting.key == "queue"))
    assert [tuple(r) for r in rows] == [("first", "ipx_update")]
    assert queue == {"interval_s": 1.5}


async def test_apply_reports_problems_and_writes_nothing(
    tmp_path: Path, amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(
        JOBS.replace("op: gt", "op: greater").replace("    lane: null", "    timeout_s: 0")
    )
    result = await asyncio.to_thread(
        jobmanager, "apply", str(file), env=service_env(amqp_url, database_url, topology)
    )
    assert result.returncode == 1
    # Every problem, each job named by its name, in words.
    assert 'job "second": trigger.conditions.0.op must be one of' in result.stderr
    assert 'job "second": timeout_s must be more than 0 and at most 86,400' in result.stderr
    assert "jobs.1" not in result.stderr and "Traceback" not in result.stderr
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Job)) == 0


async def _bound_queue(amqp: AbstractRobustConnection, topology: Topology) -> object:
    channel = await amqp.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(topology.events_exchange, "#")
    return queue


async def test_publish_and_simulate_send_events(
    amqp: AbstractRobustConnection, amqp_url: str, database_url: str, topology: Topology
) -> None:
    env = service_env(amqp_url, database_url, topology)
    queue = await _bound_queue(amqp, topology)
    one = await asyncio.to_thread(
        jobmanager,
        "publish",
        "channel.updated",
        "--data",
        '{"channel": {"channel_id": "CNN-HD"}}',
        "--event-id",
        "evt-1",
        env=env,
    )
    assert one.returncode == 0, one.stderr
    stream = await asyncio.to_thread(
        jobmanager, "simulate", "--rate", "200", "--count", "20", "--seed", "7", env=env
    )
    assert stream.returncode == 0 and "published 20 event(s)" in stream.stdout
    received = []
    for _ in range(100):
        message = await queue.get(fail=False)  # type: ignore[attr-defined]
        if message is None:
            if len(received) == 21:
                break
            await asyncio.sleep(0.05)
            continue
        received.append((message.routing_key, json.loads(message.body), message.message_id))
        await message.ack()
    assert len(received) == 21
    key, body, message_id = received[0]
    assert (key, body["event_id"], message_id) == ("channel.updated", "evt-1", "evt-1")
    assert body["data"] == {"channel": {"channel_id": "CNN-HD"}}
    types = {k for k, _, _ in received[1:]}
    assert "channel.updated" in types
    assert all(b["data"]["channel"]["channel_id"] for _, b, _ in received[1:])


async def test_apikey_create_prints_the_key_last(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    env = service_env(amqp_url, database_url, topology)
    result = await asyncio.to_thread(
        jobmanager, "apikey", "create", "--role", "operator", "--name", "ci", env=env
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.split()[-1]
    assert key.startswith("jm_") and len(key) > 40
    assert result.stdout.startswith("created an operator key: ")
    from jobmanager.admin.auth import hash_key
    from jobmanager.store.models import ApiKey

    async with engine.connect() as conn:
        row = (await conn.execute(select(ApiKey.name, ApiKey.role, ApiKey.key_hash))).one()
    assert (row.name, row.role, row.key_hash) == ("ci", "operator", hash_key(key))
    wrong = await asyncio.to_thread(jobmanager, "apikey", "create", "--role", "root", env=env)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr


async def test_a_missing_broker_or_database_is_one_clear_line(database_url: str) -> None:
    env = {
        "JOBMANAGER_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "JOBMANAGER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none",
    }
    for command in (("check",), ("matcher",), ("executor",), ("migrate",), ("publish", "x")):
        result = await asyncio.to_thread(jobmanager, *command, env=env)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines and all(line.startswith("error: ") for line in lines), (command, lines)
        assert "start it with" in lines[0]


async def test_demo_shows_executed_and_failed_runs_and_starts_again(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine, tmp_path: Path
) -> None:
    env = {
        **service_env(amqp_url, database_url, topology),
        "JOBMANAGER_SCRIPT_ENV": "IPX_CONFIG_PATH",
        "IPX_CONFIG_PATH": str(tmp_path / "ipx.json"),
    }

    def demo(seconds: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "jobmanager.cli.main", "demo", "--rate", "20", "--duration",
             str(seconds)],
            env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **env},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip

    result = await asyncio.to_thread(demo, 15)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Executed Jobs" in result.stdout and "Failed Jobs" in result.stdout
    assert "admin API: http://127.0.0.1:" in result.stdout and "jm_" in result.stdout
    async with engine.connect() as conn:
        states = dict(
            (await conn.execute(select(Run.state, func.count()).group_by(Run.state))).all()
        )
    assert states.get("succeeded", 0) > 10, states
    assert states.get("failed", 0) > 0, states
    # Started again on the same database (a second later: key names carry the second), it
    # keeps the settings and jobs and gives a key of its own.
    await asyncio.sleep(1)
    again = await asyncio.to_thread(demo, 3)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "kept as they were" in again.stdout and "Traceback" not in again.stderr
    keys = [line.split()[-1].rstrip(")") for line in (result.stdout + again.stdout).splitlines()
            if "sign in with the admin key" in line]  # fmt: skip
    assert len(keys) == 2 and keys[0] != keys[1], keys


async def test_up_runs_every_service_and_stops_them_gracefully(
    amqp: AbstractRobustConnection,
    amqp_url: str,
    database_url: str,
    topology: Topology,
    tmp_path: Path,
) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/"),
        **service_env(amqp_url, database_url, topology),
    }
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobmanager.cli.main", "up", "--executors", "2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def consumers(queue: str) -> int:
        channel = await amqp.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            return int(declared.declaration_result.consumer_count or 0)
        finally:
            await channel.close()

    try:
        for _ in range(300):
            if (
                await consumers(topology.work_queue) == 2
                and await consumers(topology.events_queue) == 1
            ):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the services did not start:\n{log_path.read_text()[-3000:]}")
        process.terminate()
        code = await asyncio.to_thread(process.wait, 60)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0
    assert await consumers(topology.work_queue) == 0
    assert await consumers(topology.events_queue) == 0
    output = log_path.read_text()
    assert "matcher stopped" in output and "Traceback" not in output
    assert "aborting" not in output, "each child was stopped once, gracefully"

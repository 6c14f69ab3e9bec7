"""What the `jobmanager` command checks before it acts, and what it says: `apply` refuses the
scripts the API refuses, `check` says what answers and why what does not, and a second
`demo` finds the first one instead of fighting it for its port and its settings."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from acceptance.test_cli import jobmanager, report_executor, service_env
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import JobSpec, Trigger
from jobmanager.store import jobs as job_store
from jobmanager.store.models import Job, Setting

TYPO = """
settings:
  queue: {interval_s: 4.0}
jobs:
  - name: ipx-update
    trigger: {event_type: channel.updated}
    script: ipx_updat
"""
SCRIPTS = ["channel_report", "ipx_update", "noop"]


async def test_apply_refuses_a_script_no_executor_has_and_writes_nothing(
    tmp_path: Path, amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    await report_executor(engine, SCRIPTS)
    file = tmp_path / "typo.yaml"
    file.write_text(TYPO)
    result = await asyncio.to_thread(
        jobmanager, "apply", str(file), env=service_env(amqp_url, database_url, topology)
    )
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    # The API's words (`POST /jobs` answers 422 with the same message), the job by its name.
    assert (
        "job \"ipx-update\": script: unknown script 'ipx_updat'; "
        "known scripts: channel_report, ipx_update, noop"
    ) in result.stderr
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Job)) == 0
        assert await conn.scalar(select(func.count()).select_from(Setting)) == 0


async def test_apply_knows_the_scripts_reported_within_the_api_window(
    tmp_path: Path, amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    await report_executor(engine, SCRIPTS, seen=datetime.now(UTC) - timedelta(hours=2))
    file = tmp_path / "jobs.yaml"
    file.write_text(TYPO.replace("ipx_updat", "ipx_update"))
    env = service_env(amqp_url, database_url, topology)
    stale = await asyncio.to_thread(jobmanager, "apply", str(file), env=env)
    assert stale.returncode == 1
    assert "known scripts: none: no executor has reported its scripts lately" in stale.stderr
    wider = {**env, "JOBMANAGER_EXECUTOR_REPORT_WINDOW_S": str(3 * 3600)}
    applied = await asyncio.to_thread(jobmanager, "apply", str(file), env=wider)
    assert applied.returncode == 0, applied.stderr
    assert "1 created" in applied.stdout


async def test_check_prints_one_line_per_service_that_answers(
    amqp_url: str, database_url: str
) -> None:
    env = {"JOBMANAGER_AMQP_URL": amqp_url, "JOBMANAGER_DATABASE_URL": database_url}
    result = await asyncio.to_thread(jobmanager, "check", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("RabbitMQ answers at amqp://")
    assert lines[1].startswith("PostgreSQL answers at postgresql://")


def _with_user(url: str, user: str, password: str | None) -> str:
    parts = urlsplit(url)
    login = user if password is None else f"{user}:{password}"
    return urlunsplit(parts._replace(netloc=f"{login}@{parts.hostname}:{parts.port}"))


async def test_check_tells_refused_credentials_from_a_server_that_is_down(
    amqp_url: str, postgres_url: str
) -> None:
    env = {
        "JOBMANAGER_AMQP_URL": _with_user(amqp_url, "guest", "not-the-password"),
        "JOBMANAGER_DATABASE_URL": _with_user(postgres_url, "jm_no_such_role", None),
    }
    result = await asyncio.to_thread(jobmanager, "check", env=env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    broker, database = lines
    assert "RabbitMQ at amqp://guest:***@" in broker and "answers but refused" in broker
    assert "JOBMANAGER_AMQP_URL" in broker
    assert "PostgreSQL at postgresql://jm_no_such_role@" in database
    assert "answers but refused" in database and "jm_no_such_role" in database
    assert "createuser" in database
    assert "start it with" not in result.stderr and "not-the-password" not in result.stderr

    vhost = {**env, "JOBMANAGER_AMQP_URL": amqp_url.rstrip("/") + "/jm-no-such-vhost"}
    result = await asyncio.to_thread(jobmanager, "check", env=vhost)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "answers but refused access to the vhost" in result.stderr.splitlines()[0]


async def test_admin_help_says_what_it_serves() -> None:
    result = await asyncio.to_thread(jobmanager, "admin", "--help", env={})
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "the API and the web console" in text and "later" not in text


# -- demo ----------------------------------------------------------------------------------


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobmanager.cli.main", "demo", "--rate", "2", *args]


def _run_demo(
    env: dict[str, str], cwd: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _demo(*args),
        env={"PATH": os.environ["PATH"], "HOME": str(cwd), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _demo_env(
    amqp_url: str, database_url: str, topology: Topology, tmp_path: Path
) -> dict[str, str]:
    return {
        **service_env(amqp_url, database_url, topology),
        "JOBMANAGER_SCRIPT_ENV": "IPX_CONFIG_PATH",
        "IPX_CONFIG_PATH": str(tmp_path / "ipx.json"),
    }


async def test_a_second_demo_says_one_is_running_and_changes_nothing(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine, tmp_path: Path
) -> None:
    env = _demo_env(amqp_url, database_url, topology, tmp_path)
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    output = tmp_path / "first.out"
    with output.open("w") as sink:
        first = subprocess.Popen(
            _demo("--duration", "90"),
            env={"PATH": os.environ["PATH"], "HOME": str(here), "PYTHONUNBUFFERED": "1", **env},
            cwd=here,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "web console:" not in output.read_text():
            assert first.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, output.read_text()[-3000:]
            await asyncio.sleep(0.2)
        # An operator changes the interval the demo set.
        async with engine.begin() as conn:
            await conn.execute(
                update(Setting).where(Setting.key == "queue").values(value={"interval_s": 9.0})
            )

        for cwd, says in (
            (here, "already running from this directory"),
            (elsewhere, "answers already"),
        ):
            started = time.monotonic()
            second = await asyncio.to_thread(_run_demo, env, cwd, "--duration", "5")
            assert second.returncode == 1, (second.stdout, second.stderr)
            assert time.monotonic() - started < 20, "it said so at once"
            lines = second.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
            assert "web console" not in second.stdout
        async with engine.connect() as conn:
            queue = await conn.scalar(select(Setting.value).where(Setting.key == "queue"))
        assert queue == {"interval_s": 9.0}
        assert first.poll() is None, "the first demo runs on"
    finally:
        first.terminate()
        await asyncio.to_thread(first.wait, 60)


async def test_a_demo_on_a_used_database_keeps_what_an_operator_changed(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine, tmp_path: Path
) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(Setting).values(key="queue", value={"interval_s": 7.5}))
        await conn.execute(
            insert(Setting).values(
                key="executed_cleanup",
                value={
                    "enabled": False,
                    "method": "row_age",
                    "max_rows": 10,
                    "max_age_s": 60.0,
                    "cleanup_amount": 5,
                },
            )
        )
        await job_store.upsert(
            conn,
            JobSpec(
                name="ipx-update",
                enabled=False,
                trigger=Trigger(event_type="channel.updated"),
                script="ipx_update",
            ),
        )
    env = _demo_env(amqp_url, database_url, topology, tmp_path)
    result = await asyncio.to_thread(_run_demo, env, tmp_path, "--duration", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "kept as they were: settings queue, settings executed_cleanup, job ipx-update"
        in result.stdout
    )
    async with engine.connect() as conn:
        stored = dict((await conn.execute(select(Setting.key, Setting.value))).all())
        jobs = dict((await conn.execute(select(Job.name, Job.enabled))).all())
    assert stored["queue"] == {"interval_s": 7.5}
    assert stored["executed_cleanup"]["method"] == "row_age"
    assert stored["failed_cleanup"]["enabled"] is True  # the demo's, where there was none
    assert jobs == {"ipx-update": False, "channel-report": True, "validation-alert": True}

"""`jobmanager apply` and a job's pause: `paused: true` pauses it, a file that leaves the
field out never resumes it, `paused: false` resumes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from acceptance.test_cli import jobmanager, report_executor, service_env
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.topology import Topology
from jobmanager.store.models import Job

JOB = """
jobs:
  - name: held
    trigger: {{event_type: channel.updated}}
    script: noop
{extra}
"""


async def _apply(tmp_path: Path, env: dict[str, str], extra: str) -> None:
    file = tmp_path / "jobs.yaml"
    file.write_text(JOB.format(extra=extra))
    result = await asyncio.to_thread(jobmanager, "apply", str(file), env=env)
    assert result.returncode == 0, result.stderr


async def _paused(engine: AsyncEngine) -> tuple[bool, str | None]:
    async with engine.connect() as conn:
        row = (await conn.execute(select(Job.paused, Job.paused_reason))).one()
    return row.paused, row.paused_reason


async def test_apply_pauses_resumes_and_otherwise_leaves_a_pause_alone(
    tmp_path: Path, amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    await report_executor(engine, ["noop"])
    env = service_env(amqp_url, database_url, topology)
    await _apply(tmp_path, env, "    paused: true")
    assert await _paused(engine) == (True, "paused by apply")
    await _apply(tmp_path, env, "")
    assert (await _paused(engine))[0] is True, "a file without `paused` keeps the pause"
    await _apply(tmp_path, env, "    paused: false")
    assert await _paused(engine) == (False, None)

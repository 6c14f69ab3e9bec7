"""`jobmanager apikey list | revoke` and `jobmanager status`, as real processes against the
real broker and database (no admin service running)."""

from __future__ import annotations

import asyncio

from acceptance.test_cli import jobmanager, report_executor, service_env
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.topology import Topology
from jobmanager.store.models import ApiKey, AuditEntry


async def test_list_and_revoke_api_keys(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    env = service_env(amqp_url, database_url, topology)
    empty = await asyncio.to_thread(jobmanager, "apikey", "list", env=env)
    assert empty.returncode == 0 and "no API keys yet" in empty.stdout
    for role in ("viewer", "admin"):
        made = await asyncio.to_thread(
            jobmanager, "apikey", "create", "--role", role, "--name", f"ops-{role}", env=env
        )
        assert made.returncode == 0, made.stderr
    async with engine.connect() as conn:
        viewer_id = await conn.scalar(select(ApiKey.id).where(ApiKey.name == "ops-viewer"))

    listed = await asyncio.to_thread(jobmanager, "apikey", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split()[:4] == ["id", "name", "role", "prefix"]
    assert len(lines) == 2 and "ops-viewer" in lines[0] and "viewer" in lines[0]
    assert all(line.rstrip().endswith("active") for line in lines)
    assert "jm_" in lines[0] and "never" in lines[0]

    revoked = await asyncio.to_thread(jobmanager, "apikey", "revoke", str(viewer_id), env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"revoked key {viewer_id} (ops-viewer)"
    again = await asyncio.to_thread(jobmanager, "apikey", "revoke", str(viewer_id), env=env)
    assert again.returncode == 1
    assert "does not exist or is revoked already" in again.stderr
    assert "Traceback" not in again.stderr
    after = await asyncio.to_thread(jobmanager, "apikey", "list", env=env)
    assert "revoked 20" in after.stdout.splitlines()[1]
    async with engine.connect() as conn:
        audit = (await conn.execute(select(AuditEntry.actor, AuditEntry.action))).all()
    assert [tuple(row) for row in audit] == [("command line", "keys.revoke")]


async def test_status_shows_tables_lanes_executors_and_dead_letters(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    await report_executor(engine, ["noop", "ipx_update"])
    env = service_env(amqp_url, database_url, topology)
    result = await asyncio.to_thread(jobmanager, "status", env=env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Jobs 0 · Queue 0 (0 waiting) · Executed Jobs 0 · Failed Jobs 0"
    assert lines[1] == "lanes: 0 busy, 0 waiting"
    assert lines[2] == "executors: 1 reported within 3600 s"
    assert lines[3].startswith("  exec-") and "busy 0/4" in lines[3]
    assert lines[3].endswith("scripts: ipx_update, noop")
    assert lines[4] == "dead letters: 0"

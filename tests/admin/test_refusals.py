"""Refused attempts leave a trace (docs/SECURITY.md), against the real database and broker:

* a mutation refused for its key (401) or its role (403) is audited: actor if known, route,
  outcome `denied`; a refused read is not;
* every request is in the access log, in the services' log format (JSON when configured);
* API key names are unique, so the audit log's actor names one key: a taken name is a 409
  from the API and one clear line from the CLI, the database refuses it too, and the
  migration that adds the constraint renames the duplicates it finds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest
from admin_kit import Admin
from alembic import command
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.admin.auth import hash_key
from jobmanager.core.logs import configure
from jobmanager.core.topology import Topology
from jobmanager.store.migrate import alembic_config
from jobmanager.store.models import ApiKey, AuditEntry

API = "/api/v1"
PROBLEM = "application/problem+json"


async def audit_rows(admin: Admin) -> list[Any]:
    async with admin.engine.connect() as conn:
        rows = await conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.id))
        return list(rows.all())


async def send(admin: Admin, method: str, url: str, key: str | None, json: Any = None) -> Any:
    request = admin.client.build_request(method, url, json=json)
    del request.headers["Authorization"]
    if key is not None:
        request.headers["Authorization"] = f"Bearer {key}"
    return await admin.client.send(request)


# -- denied mutations are audited ------------------------------------------------------------


async def test_a_mutation_without_a_valid_key_is_audited_as_denied(admin: Admin) -> None:
    anonymous = await send(admin, "POST", f"{API}/jobs", None, json={"name": "x"})
    assert anonymous.status_code == 401, anonymous.text
    unknown = await send(admin, "DELETE", f"{API}/queue/7", "jm_" + "Q" * 43)
    assert unknown.status_code == 401, unknown.text

    rows = [
        (r.actor, r.action, r.target, r.outcome, r.detail["status"])
        for r in await audit_rows(admin)
    ]
    assert rows == [
        ("anonymous", "POST /api/v1/jobs", "/api/v1/jobs", "denied", 401),
        ("unknown key", "DELETE /api/v1/queue/{run_id}", "/api/v1/queue/7", "denied", 401),
    ]


async def test_a_mutation_with_too_low_a_role_is_audited_with_its_key(admin: Admin) -> None:
    viewer = await admin.key("viewer")
    operator = await admin.key("operator")
    async with admin.engine.connect() as conn:
        names = dict((await conn.execute(select(ApiKey.key_hash, ApiKey.name))).all())
    refused = await send(admin, "PUT", f"{API}/settings/queue", viewer, json={"interval_s": 1})
    assert refused.status_code == 403, refused.text
    refused = await send(admin, "DELETE", f"{API}/keys/1", operator)
    assert refused.status_code == 403, refused.text

    [first, second] = await audit_rows(admin)
    assert (first.actor, first.action, first.outcome) == (
        f"key:{names[hash_key(viewer)]}",
        "PUT /api/v1/settings/queue",
        "denied",
    )
    assert first.detail == {
        "status": 403,
        "reason": "this needs the admin role; the key has the viewer role",
    }
    assert (second.actor, second.action, second.target) == (
        f"key:{names[hash_key(operator)]}",
        "DELETE /api/v1/keys/{key_id}",
        "/api/v1/keys/1",
    )


async def test_a_refused_read_is_not_audited(admin: Admin) -> None:
    assert (await send(admin, "GET", f"{API}/keys", None)).status_code == 401
    assert (await send(admin, "GET", f"{API}/keys", await admin.key("viewer"))).status_code == 403
    assert await audit_rows(admin) == []


# -- the access log --------------------------------------------------------------------------


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "jobmanager.admin.access"]


async def test_every_request_is_in_the_access_log(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="jobmanager.admin.access")
    assert (await admin.client.get(f"{API}/queue")).status_code == 200
    assert (await send(admin, "POST", f"{API}/jobs", None, json={})).status_code == 401
    assert (await admin.client.get("/healthz")).status_code == 200

    served, refused, probe = access_records(caplog)
    assert (served.method, served.path, served.status, served.actor) == (
        "GET",
        "/api/v1/queue",
        200,
        "bootstrap-token",
    )
    assert served.levelno == logging.INFO
    assert (refused.method, refused.path, refused.status, refused.actor) == (
        "POST",
        "/api/v1/jobs",
        401,
        "anonymous",
    )
    assert refused.getMessage().startswith("POST /api/v1/jobs 401 ")
    assert probe.levelno == logging.DEBUG  # probes every few seconds must not drown the log


async def test_the_access_log_is_json_when_the_services_log_json(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobmanager.admin.access")
    assert (await send(admin, "DELETE", f"{API}/queue/1", None)).status_code == 401
    [record] = access_records(caplog)

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("INFO", "json", service="admin")
        formatter = root.handlers[0].formatter
        assert formatter is not None
        line = json.loads(formatter.format(record))
    finally:
        root.handlers[:], root.level = handlers, level
    assert line["service"] == "admin"
    assert line["level"] == "INFO"
    assert {k: line[k] for k in ("method", "path", "status", "actor")} == {
        "method": "DELETE",
        "path": "/api/v1/queue/1",
        "status": 401,
        "actor": "anonymous",
    }
    assert isinstance(line["duration_ms"], float)


async def test_a_path_cannot_break_an_access_log_line(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobmanager.admin.access")
    await admin.client.get("/api/v1/queue%0a200%20forged")
    [record] = access_records(caplog)
    assert "\n" not in record.getMessage()


# -- unique key names ------------------------------------------------------------------------


async def test_a_key_name_taken_is_409_and_audited(admin: Admin) -> None:
    first = await admin.client.post(f"{API}/keys", json={"name": "ops", "role": "viewer"})
    assert first.status_code == 201, first.text
    again = await admin.client.post(f"{API}/keys", json={"name": "ops", "role": "admin"})
    assert again.status_code == 409, again.text
    assert again.headers["content-type"] == PROBLEM
    assert again.json()["detail"] == "an API key named 'ops' exists already; choose another name"

    async with admin.engine.connect() as conn:
        roles = (await conn.execute(select(ApiKey.role).where(ApiKey.name == "ops"))).scalars()
        assert list(roles) == ["viewer"]
    outcomes = [(r.action, r.target, r.outcome) for r in await audit_rows(admin)]
    assert outcomes == [("keys.create", "key:ops", "ok"), ("keys.create", "key:ops", "refused")]


async def test_the_database_refuses_a_second_key_of_the_same_name(engine: AsyncEngine) -> None:
    row = {"name": "twice", "prefix": "jm_x", "role": "viewer"}
    async with engine.begin() as conn:
        await conn.execute(insert(ApiKey.__table__).values(key_hash="a" * 64, **row))
    with pytest.raises(IntegrityError, match="uq_api_keys_name"):
        async with engine.begin() as conn:
            await conn.execute(insert(ApiKey.__table__).values(key_hash="b" * 64, **row))


def jobmanager(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobmanager.cli.main", *args],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_says_in_one_line_that_a_key_name_is_taken(
    amqp_url: str, database_url: str, topology: Topology
) -> None:
    env = {
        "JOBMANAGER_AMQP_URL": amqp_url,
        "JOBMANAGER_DATABASE_URL": database_url,
        "JOBMANAGER_NAMESPACE": topology.namespace,
    }
    command = ("apikey", "create", "--role", "operator", "--name", "ci")
    first = await asyncio.to_thread(jobmanager, *command, env=env)
    assert first.returncode == 0, first.stderr
    again = await asyncio.to_thread(jobmanager, *command, env=env)
    assert again.returncode == 1, again.stdout
    assert "Traceback" not in again.stderr, again.stderr
    assert again.stderr.strip() == (
        "error: an API key named 'ci' exists already; choose another name"
    ), again.stderr


async def test_the_migration_renames_keys_that_share_a_name(
    engine: AsyncEngine, database_url: str
) -> None:
    config = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, config, "0005")  # before the constraint
    async with engine.begin() as conn:
        for i, name in enumerate(["ops", "ops", "ci", "ops"]):
            await conn.execute(
                insert(ApiKey.__table__).values(
                    name=name, prefix="jm_x", key_hash=f"{i:064d}", role="viewer"
                )
            )
    await asyncio.to_thread(command.upgrade, config, "head")
    async with engine.connect() as conn:
        names = (await conn.execute(select(ApiKey.name).order_by(ApiKey.id))).scalars().all()
    assert names == ["ops", "ops #2", "ci", "ops #4"]

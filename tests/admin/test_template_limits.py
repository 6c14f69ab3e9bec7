"""The admin renders templates within the render limits, in its render workers: a dry run of
a runaway or memory-hungry template is a 422 naming the limit while the API answers on, and a
job whose templates exceed a limit on a sample event is refused when created or changed."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from admin_kit import Admin

from jobmanager.admin.routes.common import API
from jobmanager.core.messages import Event
from jobmanager.jobs.spec import JobSpec
from jobmanager.store import jobs as job_store
from jobmanager.store import ledger

RUNAWAY = "{% for i in range(100000) %}{% for j in range(data.n) %}{% endfor %}{% endfor %}"
FOREVER = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
BOMB = "{{ ''.ljust(200000000) }}"
CPU = "rendering exceeded the CPU time limit (1 s)"
MEMORY = "rendering exceeded the memory limit (64 MiB)"
EVENT = {"event_id": "e1", "event_type": "limits.test", "data": {"n": 100000}}


def job(**fields: Any) -> dict[str, Any]:
    return {
        "name": "limits",
        "trigger": {"event_type": "limits.test"},
        "script": "noop",
        "command_template": "{{ data.n }}",
        "lane": None,
        **fields,
    }


async def stored(admin: Admin, **fields: Any) -> int:
    """A job stored directly, as one stored before the admin tried templates would be."""
    async with admin.engine.begin() as conn:
        job_id, _ = await job_store.upsert(conn, JobSpec.model_validate(job(**fields)))
    return job_id


async def dry_run(admin: Admin, job_id: int) -> Any:
    return await admin.client.post(f"{API}/jobs/{job_id}/test", json={"event": EVENT})


@pytest.mark.timeout(30)
async def test_a_runaway_dry_run_is_422_and_the_api_answers_meanwhile(admin: Admin) -> None:
    job_id = await stored(admin, command_template=RUNAWAY)
    start = time.monotonic()
    answer = asyncio.create_task(dry_run(admin, job_id))
    health = []
    while not answer.done():
        sent = time.monotonic()
        assert (await admin.client.get("/healthz")).status_code == 200
        health.append(time.monotonic() - sent)
        await asyncio.sleep(0.05)
    response = await answer
    elapsed = time.monotonic() - start
    assert response.status_code == 422, response.text
    # "command template: ...", or "command or lane template: ..." when a loaded machine
    # gave the worker less than its CPU second before the wall-clock backstop.
    assert response.json()["detail"].endswith(f"template: {CPU}")
    assert elapsed < 1.5 * 1.0 + 0.5 + 0.5, "the render stopped at its limit"
    assert len(health) >= 5 and max(health) < 0.2, health


async def test_a_memory_bomb_dry_run_is_422_naming_the_memory_limit(admin: Admin) -> None:
    response = await dry_run(admin, await stored(admin, lane=BOMB))
    assert response.status_code == 422
    assert response.json()["detail"] == f"lane template: {MEMORY}"


async def test_a_dry_run_within_the_limits_renders_as_before(admin: Admin) -> None:
    response = await dry_run(admin, await stored(admin, lane="{{ nothing }}"))
    assert response.status_code == 200
    body = response.json()
    assert body["error"] == "lane template: 'nothing' is undefined"
    assert (body["command"], body["lane"]) == ("100000", None), "as before the render limits"
    ok = await dry_run(admin, await stored(admin, name="fine", lane="n-{{ data.n }}"))
    assert (ok.json()["command"], ok.json()["lane"]) == ("100000", "n-100000")


async def test_creating_a_job_whose_template_never_ends_is_refused(admin: Admin) -> None:
    await admin.report_executor(["noop"])
    response = await admin.client.post(f"{API}/jobs", json=job(command_template=FOREVER))
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["loc"] == ["body", "command_template"]
    assert error["msg"] == f"command template: {CPU} (tried on event 'sample')"
    assert (await admin.client.get(f"{API}/jobs")).json()["items"] == []


async def test_a_job_is_tried_on_the_newest_recorded_event_it_matches(admin: Admin) -> None:
    await admin.report_executor(["noop"])
    # Without a recorded event, `data.n` is undefined on the sample: a template error is not
    # refused (real events may carry what the sample lacks).
    created = await admin.client.post(f"{API}/jobs", json=job(command_template=RUNAWAY))
    assert created.status_code == 201, created.text
    await admin.client.delete(f"{API}/jobs/{created.json()['id']}")
    async with admin.engine.begin() as conn:  # recorded as the matcher records an event
        await ledger.enqueue(
            conn, [(Event.model_validate(EVENT), [])], interval_s=0, now=datetime.now(UTC)
        )
    refused = await admin.client.post(f"{API}/jobs", json=job(command_template=RUNAWAY))
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["msg"] == f"command template: {CPU} (tried on event 'e1')"


async def test_changing_a_template_to_one_over_a_limit_is_refused(admin: Admin) -> None:
    await admin.report_executor(["noop"])
    created = (await admin.client.post(f"{API}/jobs", json=job())).json()
    changed = await admin.client.patch(f"{API}/jobs/{created['id']}", json={"lane": BOMB})
    assert changed.status_code == 422
    assert changed.json()["errors"][0]["loc"] == ["body", "lane"]
    assert MEMORY in changed.json()["errors"][0]["msg"]
    unchanged = (await admin.client.get(f"{API}/jobs/{created['id']}")).json()
    assert unchanged["lane"] is None

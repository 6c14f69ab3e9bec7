"""Flow control through the admin API: pause and resume (operator, audited), the job's new
fields, and a debounced run's lineage in its run page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from admin_kit import Admin
from sqlalchemy import select

from jobmanager.core.messages import Event
from jobmanager.jobs.spec import JobSpec, PlannedRun, Trigger
from jobmanager.store import jobs as job_store
from jobmanager.store import ledger
from jobmanager.store.models import AuditEntry

API = "/api/v1"


async def _job(admin: Admin, **fields: Any) -> int:
    spec = JobSpec(
        name=f"flow-{uuid.uuid4().hex[:6]}",
        trigger=Trigger(event_type="x"),
        script="noop",
        **fields,
    )
    async with admin.engine.begin() as conn:
        job_id, _ = await job_store.upsert(conn, spec)
    return job_id


async def test_an_operator_pauses_and_resumes_a_job_and_both_are_audited(admin: Admin) -> None:
    job_id = await _job(admin, pause_after_failures=3, max_concurrency=2)
    operator = {"Authorization": f"Bearer {await admin.key('operator')}"}
    paused = await admin.client.post(f"{API}/jobs/{job_id}/pause", headers=operator)
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["paused"] is True and body["paused_at"]
    assert body["paused_reason"].startswith("paused by key:operator-")
    assert (body["pause_after_failures"], body["max_concurrency"]) == (3, 2)
    again = await admin.client.post(f"{API}/jobs/{job_id}/pause", headers=operator)
    assert again.json()["paused_at"] == body["paused_at"], "pausing twice changes nothing"
    resumed = await admin.client.post(f"{API}/jobs/{job_id}/resume", headers=operator)
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    assert resumed.json()["paused_reason"] is None
    async with admin.engine.connect() as conn:
        actions = (
            await conn.scalars(
                select(AuditEntry.action).where(AuditEntry.target == f"job:{job_id}")
            )
        ).all()
    assert actions == ["jobs.pause", "jobs.pause", "jobs.resume"]
    missing = await admin.client.post(f"{API}/jobs/{job_id + 999}/pause", headers=operator)
    assert missing.status_code == 404


async def test_a_viewer_may_not_pause(admin: Admin) -> None:
    job_id = await _job(admin)
    viewer = {"Authorization": f"Bearer {await admin.key('viewer')}"}
    assert (
        await admin.client.post(f"{API}/jobs/{job_id}/pause", headers=viewer)
    ).status_code == 403


async def test_invalid_flow_control_fields_are_refused_with_422(admin: Admin) -> None:
    job_id = await _job(admin)
    for body in (
        {"max_concurrency": 0},
        {"pause_after_failures": 0},
        {"debounce_s": -1},
        {"debounce_s": 5, "debounce_max_s": 2},
    ):
        answer = await admin.client.patch(f"{API}/jobs/{job_id}", json=body)
        assert answer.status_code == 422, (body, answer.text)


async def test_a_debounced_runs_page_lists_the_events_it_absorbed(admin: Admin) -> None:
    job_id = await _job(admin, debounce_s=60)
    events = [Event(event_id=f"burst-{k}", event_type="x") for k in range(3)]
    planned = PlannedRun(
        job_id=job_id, job_name="j", script="noop", command="c", lane="burst", debounce_s=60
    )
    for event in events:
        async with admin.engine.begin() as conn:
            await ledger.enqueue(conn, [(event, [planned])], interval_s=0, now=datetime.now(UTC))
    queue = (await admin.client.get(f"{API}/queue")).json()["items"]
    [survivor] = [r for r in queue if r["lane"] == "burst"]
    assert survivor["absorbed"] == 2
    page = (await admin.client.get(f"{API}/runs/{survivor['id']}")).json()
    assert page["absorbed_events"] == ["burst-0", "burst-1"]
    first = (await admin.client.get(f"{API}/runs/{survivor['id'] - 2}")).json()
    assert first["state"] == "superseded" and first["superseded_by"] == survivor["id"] - 1


async def test_the_queue_says_which_runs_wait_for_their_paused_job(admin: Admin) -> None:
    paused_id, running_id = await _job(admin), await _job(admin)
    operator = {"Authorization": f"Bearer {await admin.key('operator')}"}
    lane = f"pause-{uuid.uuid4().hex[:6]}"
    for job_id in (paused_id, running_id):
        planned = PlannedRun(
            job_id=job_id, job_name=f"j{job_id}", script="noop", command="c", lane=lane
        )
        event = Event(event_id=uuid.uuid4().hex, event_type="x")
        async with admin.engine.begin() as conn:
            await ledger.enqueue(conn, [(event, [planned])], interval_s=0, now=datetime.now(UTC))
    assert (await admin.client.post(f"{API}/jobs/{paused_id}/pause", headers=operator)).is_success
    for order in ("newest", "start"):
        items = await admin.client.get(f"{API}/queue", params={"lane": lane, "order": order})
        paused = {run["job_id"]: run["paused"] for run in items.json()["items"]}
        assert paused == {paused_id: True, running_id: False}, order
    assert (await admin.client.post(f"{API}/jobs/{paused_id}/resume", headers=operator)).is_success
    items = (await admin.client.get(f"{API}/queue", params={"lane": lane})).json()["items"]
    assert [run["paused"] for run in items] == [False, False]

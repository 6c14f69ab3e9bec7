"""Bulk actions by filter through the admin API, against the real database and broker."""

from __future__ import annotations

from typing import Any

from admin_kit import Admin
from sqlalchemy import select

from jobmanager.store.models import AuditEntry, Run

API = "/api/v1"


async def _failed(admin: Admin, job: str, count: int) -> list[int]:
    return [await admin.run_to_end(2, "broken", lane=f"{job}-{i}", job=job) for i in range(count)]


async def _states(admin: Admin, ids: list[int]) -> list[str]:
    async with admin.engine.connect() as conn:
        rows = (await conn.execute(select(Run.id, Run.state).where(Run.id.in_(ids)))).all()
    return [state for _, state in sorted(rows)]


async def test_execute_again_by_job_counts_first_and_leaves_other_jobs_alone(
    admin: Admin,
) -> None:
    x = await _failed(admin, "job-x", 20)
    y = await _failed(admin, "job-y", 5)
    dry = await admin.client.post(f"{API}/failed/execute", json={"job": "job-x", "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json() == {"matched": 20, "changed": 0, "more": False, "dry_run": True}
    assert set(await _states(admin, x)) == {"failed"}
    done = (await admin.client.post(f"{API}/failed/execute", json={"job": "job-x"})).json()
    assert (done["matched"], done["changed"], done["more"]) == (20, 20, False)
    assert set(await _states(admin, x)) == {"queued"}
    assert set(await _states(admin, y)) == {"failed"}
    async with admin.engine.connect() as conn:
        attempts = (await conn.scalars(select(Run.attempt).where(Run.id.in_(x)))).all()
        audit = (
            await conn.execute(
                select(AuditEntry.action, AuditEntry.detail).where(
                    AuditEntry.action == "failed.execute_many"
                )
            )
        ).all()
    assert set(attempts) == {2}, "a new attempt each"
    assert [(a, d["job"], d["matched"], d["changed"]) for a, d in audit] == [
        ("failed.execute_many", "job-x", 20, 0),
        ("failed.execute_many", "job-x", 20, 20),
    ]


async def test_a_limit_acts_on_the_oldest_and_says_more_match(admin: Admin) -> None:
    ids = await _failed(admin, "job-l", 5)
    answer = (await admin.client.request("DELETE", f"{API}/failed", json={"limit": 3})).json()
    assert answer == {"matched": 3, "changed": 3, "more": True, "dry_run": False}
    assert await _states(admin, ids) == ["failed", "failed"], "the two newest stay"


async def test_explicit_ids_act_only_on_runs_of_that_table(admin: Admin) -> None:
    failed = await _failed(admin, "job-i", 2)
    succeeded = await admin.run_to_end(3, "done", lane="i-ok", job="job-i")
    body: dict[str, Any] = {"run_ids": [*failed, succeeded]}
    answer = (await admin.client.request("DELETE", f"{API}/failed", json=body)).json()
    assert (answer["matched"], answer["changed"]) == (2, 2)
    assert await _states(admin, [succeeded]) == ["succeeded"]


async def test_remove_many_removes_queued_runs_and_leaves_running_ones(admin: Admin) -> None:
    requests = await admin.runs("bulk-lane", "bulk-lane", "bulk-lane", job="job-r")
    [head] = requests
    await admin.dispatch(head)
    answer = (await admin.client.post(f"{API}/queue/remove", json={"job": "job-r"})).json()
    assert (answer["matched"], answer["changed"]) == (3, 2), "the dispatched head stays"
    async with admin.engine.connect() as conn:
        states = sorted(
            (await conn.scalars(select(Run.state).where(Run.job_name == "job-r"))).all()
        )
    assert states == ["dispatched", "removed", "removed"]


async def test_bulk_actions_refuse_a_viewer_and_bad_bodies(admin: Admin) -> None:
    viewer = {"Authorization": f"Bearer {await admin.key('viewer')}"}
    operator = {"Authorization": f"Bearer {await admin.key('operator')}"}
    refused = await admin.client.post(f"{API}/failed/execute", json={}, headers=viewer)
    assert refused.status_code == 403
    delete = await admin.client.request("DELETE", f"{API}/failed", json={}, headers=operator)
    assert delete.status_code == 403, "deleting is the admin's"
    for body in ({"limit": 0}, {"limit": 10_001}, {"nope": 1}, {"run_ids": ["x"]}):
        answer = await admin.client.post(f"{API}/failed/execute", json=body)
        assert answer.status_code == 422, (body, answer.text)

"""Cancel through the admin API (`POST /queue/{id}/cancel`): operator only, audited; a queued
run is removed, a dispatched one ends Failed with the caller in its Feedback and the cancel
goes out on the executors' control exchange; an ended run is 409, an unknown one 404."""

from __future__ import annotations

import asyncio

from admin_kit import Admin
from aio_pika.abc import AbstractRobustConnection
from sqlalchemy import select

from jobmanager.core.messages import CancelRequest
from jobmanager.core.topology import Topology
from jobmanager.store.models import AuditEntry

API = "/api/v1"


async def test_an_operator_cancels_and_the_executors_are_told(
    admin: Admin, amqp: AbstractRobustConnection, topology: Topology
) -> None:
    channel = await amqp.channel()
    heard = await channel.declare_queue(exclusive=True, auto_delete=True)
    await heard.bind(topology.executor_control_exchange)
    head, *_ = await admin.runs("lane", "lane")
    sent = await admin.dispatch(head)
    operator = await admin.key("operator")
    name = (await admin.client.get(f"{API}/whoami", headers=admin.as_(operator))).json()["name"]

    answer = await admin.client.post(
        f"{API}/queue/{sent.run_id}/cancel", headers=admin.as_(operator)
    )
    assert answer.status_code == 200, answer.text
    run = answer.json()
    assert (run["state"], run["result"], run["feedback"]) == ("failed", 2, f"cancelled by {name}")
    message = await heard.get(timeout=5, fail=False)
    for _ in range(50):  # published after the commit, just before the answer
        if message is not None:
            break
        await asyncio.sleep(0.05)
        message = await heard.get(timeout=5, fail=False)
    assert message is not None, "no cancel on the executors' control exchange"
    cancel = CancelRequest.model_validate_json(message.body)
    assert (cancel.run_id, cancel.attempt, cancel.by, cancel.grace_s) == (sent.run_id, 1, name, 10)

    # The lane moved on: the next run is the lane's head now, and can be cancelled as queued.
    queued = await admin.client.post(
        f"{API}/queue/{sent.run_id + 1}/cancel", headers=admin.as_(operator)
    )
    assert queued.status_code == 200 and queued.json()["state"] == "removed"


async def test_cancel_refusals_roles_and_audit(admin: Admin) -> None:
    run_id = await admin.run_to_end(3)
    viewer = await admin.key("viewer")
    assert (
        await admin.client.post(f"{API}/queue/{run_id}/cancel", headers=admin.as_(viewer))
    ).status_code == 403
    ended = await admin.client.post(f"{API}/queue/{run_id}/cancel")
    assert ended.status_code == 409
    assert (
        ended.json()["detail"]
        == f"run {run_id} has already ended (succeeded) and cannot be cancelled"
    )
    assert (await admin.client.post(f"{API}/queue/999999/cancel")).status_code == 404
    [head] = await admin.runs(None)
    assert (await admin.client.post(f"{API}/queue/{head.run_id}/cancel")).status_code == 200
    async with admin.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(AuditEntry.__table__)
                .where(AuditEntry.action.like("queue.%"))
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [(r.action, r.target, r.outcome) for r in rows] == [
        ("queue.cancel", f"run:{run_id}", "refused"),
        ("queue.cancel", "run:999999", "refused"),
        ("queue.cancel", f"run:{head.run_id}", "ok"),
    ]
    assert "has already ended" in rows[0].detail["reason"]


async def test_a_jobs_cancel_grace_is_set_changed_and_bounded(admin: Admin) -> None:
    await admin.report_executor()
    body = {"name": "graceful", "trigger": {"event_type": "x"}, "script": "noop"}
    created = await admin.client.post(f"{API}/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["cancel_grace_s"] == 10, "the default"
    path = f"{API}/jobs/{job['id']}"
    changed = await admin.client.patch(path, json={"cancel_grace_s": 1.5})
    assert changed.status_code == 200 and changed.json()["cancel_grace_s"] == 1.5
    assert (await admin.client.get(path)).json()["cancel_grace_s"] == 1.5
    assert (await admin.client.patch(path, json={"cancel_grace_s": -1})).status_code == 422

"""The admin API's behaviour against the real database and broker: the four tables, the
operator actions through the ledger, jobs with validation, settings, keys and the audit log."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from admin_kit import Admin
from sqlalchemy import func, select

from jobmanager.core.messages import Event
from jobmanager.store import ledger
from jobmanager.store.models import AuditEntry, Job

API = "/api/v1"

JOB: dict[str, Any] = {
    "name": "ipx-update",
    "trigger": {
        "event_type": "channel.updated",
        "conditions": [
            {"path": "data.channel.origin", "op": "eq", "value": "avcm"},
            {"path": "data.changes.pod_service", "op": "exists"},
        ],
    },
    "script": "ipx_update",
    "command_template": "{{ data.channel | tojson }}",
    "lane": "{{ data.channel.channel_id }}",
    "timeout_s": 120,
    "max_attempts": 3,
    "retry_backoff_s": 10,
}


async def audit_rows(admin: Admin) -> list[Any]:
    async with admin.engine.connect() as conn:
        return list(
            (await conn.execute(select(AuditEntry.__table__).order_by(AuditEntry.id))).all()
        )


async def test_the_queue_lists_newest_first_with_keyset_pages(admin: Admin) -> None:
    requests = await admin.runs(*(["lane-a"] * 5), *(["lane-b"] * 2))
    assert len(requests) == 2
    first = (await admin.client.get(f"{API}/queue", params={"limit": 3})).json()
    assert [r["id"] for r in first["items"]] == [7, 6, 5]
    second = (
        await admin.client.get(f"{API}/queue", params={"limit": 3, "cursor": first["next_cursor"]})
    ).json()
    third = (
        await admin.client.get(f"{API}/queue", params={"limit": 3, "cursor": second["next_cursor"]})
    ).json()
    assert [r["id"] for r in second["items"]] == [4, 3, 2]
    assert [r["id"] for r in third["items"]] == [1] and third["next_cursor"] is None
    row = third["items"][0]
    for field in (
        "id",
        "job",
        "script",
        "lane",
        "command",
        "state",
        "attempt",
        "enqueued_at",
        "not_before",
        "started_at",
        "finished_at",
        "duration_s",
        "result",
        "feedback",
        "event_id",
    ):
        assert field in row
    lane_b = (await admin.client.get(f"{API}/queue", params={"lane": "lane-b"})).json()
    assert [r["id"] for r in lane_b["items"]] == [7, 6]
    text = (await admin.client.get(f"{API}/queue", params={"q": "command 6"})).json()
    assert [r["id"] for r in text["items"]] == [7]


async def test_page_size_is_capped_and_bad_cursors_are_422(admin: Admin) -> None:
    too_big = await admin.client.get(f"{API}/queue", params={"limit": 501})
    assert too_big.status_code == 422 and too_big.headers["content-type"].startswith(
        "application/problem+json"
    )
    assert "limit" in too_big.json()["detail"]
    for cursor in ("garbage", "W10", "WyJ4Il0"):  # not base64 JSON; []; ["x"]
        bad = await admin.client.get(f"{API}/executed", params={"cursor": cursor})
        assert bad.status_code == 422, (cursor, bad.text)


async def test_executed_and_failed_tables(admin: Admin) -> None:
    ok = await admin.run_to_end(3, "IPX updated")
    bad = await admin.run_to_end(2, "pod-9 does not exist")
    executed = (await admin.client.get(f"{API}/executed")).json()["items"]
    failed = (await admin.client.get(f"{API}/failed")).json()["items"]
    assert [(r["id"], r["result"], r["feedback"]) for r in executed] == [(ok, 3, "IPX updated")]
    assert [(r["id"], r["result"]) for r in failed] == [(bad, 2)]
    assert failed[0]["duration_s"] is not None and failed[0]["feedback"] == "pod-9 does not exist"
    found = (await admin.client.get(f"{API}/failed", params={"q": "POD-9"})).json()["items"]
    assert len(found) == 1, "text search ignores case"


async def test_remove_a_waiting_run_and_409_for_a_dispatched_one(admin: Admin) -> None:
    head, *_ = await admin.runs("lane", "lane", "lane")
    sent = await admin.dispatch(head)
    refused = await admin.client.delete(f"{API}/queue/{sent.run_id}")
    assert refused.status_code == 409
    assert "already dispatched" in refused.json()["detail"]
    removed = await admin.client.delete(f"{API}/queue/{sent.run_id + 1}")
    assert removed.status_code == 200 and removed.json()["state"] == "removed"
    assert (await admin.client.delete(f"{API}/queue/999999")).status_code == 404
    rows = await audit_rows(admin)
    assert [(r.action, r.target, r.outcome) for r in rows] == [
        ("queue.remove", f"run:{sent.run_id}", "refused"),
        ("queue.remove", f"run:{sent.run_id + 1}", "ok"),
        ("queue.remove", "run:999999", "refused"),
    ]
    assert rows[0].actor == "bootstrap-token" and "already dispatched" in rows[0].detail["reason"]


async def test_execute_now_and_execute_a_failed_run_again(admin: Admin) -> None:
    head, *_ = await admin.runs("lane", "lane", "lane", interval_s=3600)
    now = await admin.client.post(f"{API}/queue/{head.run_id + 2}/execute-now")
    assert now.status_code == 200 and now.json()["execute_now"] is True
    failed = await admin.run_to_end(2, "first try failed")
    again = await admin.client.post(f"{API}/failed/{failed}/execute")
    assert again.status_code == 200
    body = again.json()
    assert (body["state"], body["attempt"]) == ("queued", 2)
    assert [a["feedback"] for a in body["attempts"]] == ["first try failed"]
    assert (await admin.client.post(f"{API}/failed/{head.run_id}/execute")).status_code == 409


async def test_run_detail_shows_attempts_and_the_event(admin: Admin) -> None:
    run_id = await admin.run_to_end(3, "done")
    detail = (await admin.client.get(f"{API}/runs/{run_id}")).json()
    assert detail["event"]["data"] == {"channel": {"channel_id": "ESPN-HD"}}
    assert [(a["attempt"], a["result"]) for a in detail["attempts"]] == [(1, 3)]
    assert (await admin.client.get(f"{API}/runs/424242")).status_code == 404


async def test_deletes_from_the_executed_and_failed_tables(admin: Admin) -> None:
    ok = await admin.run_to_end(3)
    bad = await admin.run_to_end(2)
    assert (await admin.client.delete(f"{API}/failed/{ok}")).status_code == 409
    assert (await admin.client.delete(f"{API}/executed/{ok}")).status_code == 204
    assert (await admin.client.delete(f"{API}/failed/{bad}")).status_code == 204
    assert (await admin.client.get(f"{API}/executed")).json()["items"] == []
    assert (await admin.client.delete(f"{API}/failed/{bad}")).status_code == 404


async def test_auto_cleanup_and_queue_settings(admin: Admin) -> None:
    default = (await admin.client.get(f"{API}/executed/cleanup")).json()
    assert default["enabled"] is False
    body = {
        "enabled": True,
        "method": "both",
        "max_rows": 100,
        "max_age_s": 3600,
        "cleanup_amount": 10,
    }
    assert (await admin.client.put(f"{API}/failed/cleanup", json=body)).json() == body
    assert (await admin.client.get(f"{API}/failed/cleanup")).json() == body
    assert (await admin.client.get(f"{API}/executed/cleanup")).json() == default
    wrong = await admin.client.put(f"{API}/failed/cleanup", json={**body, "method": "random"})
    assert wrong.status_code == 422
    assert (await admin.client.put(f"{API}/settings/queue", json={"interval_s": 2.5})).json() == {
        "interval_s": 2.5
    }
    assert (await admin.client.get(f"{API}/settings/queue")).json() == {"interval_s": 2.5}
    negative = await admin.client.put(f"{API}/settings/queue", json={"interval_s": -1})
    assert negative.status_code == 422


async def test_jobs_are_validated(admin: Admin) -> None:
    unknown = await admin.client.post(f"{API}/jobs", json=JOB)
    assert unknown.status_code == 422 and "no executor has reported" in unknown.json()["detail"]
    await admin.report_executor(["noop", "ipx_update"])
    created = await admin.client.post(f"{API}/jobs", json=JOB)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["name"] == "ipx-update" and job["id"] > 0
    assert (await admin.client.post(f"{API}/jobs", json=JOB)).status_code == 409
    other = await admin.client.post(f"{API}/jobs", json={**JOB, "name": "x", "script": "nope"})
    assert other.status_code == 422
    assert "known scripts: ipx_update, noop" in other.json()["detail"]
    template = await admin.client.post(
        f"{API}/jobs", json={**JOB, "name": "t", "command_template": "{{ data.x "}
    )
    assert template.status_code == 422 and "command_template" in template.json()["detail"]
    regex = await admin.client.post(
        f"{API}/jobs",
        json={
            **JOB,
            "name": "r",
            "trigger": {
                "event_type": "x",
                "conditions": [{"path": "data.x", "op": "regex", "value": "(unclosed"}],
            },
        },
    )
    assert regex.status_code == 422 and "missing )" in regex.text
    patched = await admin.client.patch(
        f"{API}/jobs/{job['id']}", json={"enabled": False, "lane": None}
    )
    assert patched.status_code == 200
    assert (patched.json()["enabled"], patched.json()["lane"]) == (False, None)
    bad_patch = await admin.client.patch(f"{API}/jobs/{job['id']}", json={"max_attempts": 0})
    assert bad_patch.status_code == 422
    listed = (await admin.client.get(f"{API}/jobs", params={"q": "ipx"})).json()["items"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert (await admin.client.delete(f"{API}/jobs/{job['id']}")).status_code == 204
    async with admin.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Job)) == 0


async def test_a_job_dry_run_says_which_condition_failed(admin: Admin) -> None:
    await admin.report_executor()
    job = (await admin.client.post(f"{API}/jobs", json=JOB)).json()
    event = {
        "event_id": "e1",
        "event_type": "channel.updated",
        "data": {"channel": {"channel_id": "ESPN-HD", "origin": "manual"}},
    }
    result = (await admin.client.post(f"{API}/jobs/{job['id']}/test", json={"event": event})).json()
    assert result["matched"] is False and result["event_type_ok"] is True
    reasons = [c["reason"] for c in result["checks"] if not c["passed"]]
    assert any("data.channel.origin" in r and "avcm" in r for r in reasons)
    assert any("data.changes.pod_service is missing" in r for r in reasons)
    assert result["lane"] == "ESPN-HD"
    event["data"]["channel"]["origin"] = "avcm"  # type: ignore[index]
    event["data"]["changes"] = {"pod_service": {"old": "pod-3", "new": "pod-7"}}  # type: ignore[index]
    matched = (
        await admin.client.post(f"{API}/jobs/{job['id']}/test", json={"event": event})
    ).json()
    assert matched["matched"] is True and '"origin": "avcm"' in matched["command"]
    nothing = await admin.client.post(f"{API}/jobs/{job['id']}/test", json={})
    assert nothing.status_code == 404, "no recorded event yet"
    await admin.runs("lane")
    latest = await admin.client.post(f"{API}/jobs/{job['id']}/test", json={})
    assert latest.status_code == 200 and latest.json()["event"]["event_type"] == "channel.updated"


async def test_api_keys_and_roles(admin: Admin) -> None:
    created = await admin.client.post(f"{API}/keys", json={"name": "ops", "role": "operator"})
    assert created.status_code == 201
    key = created.json()["key"]
    as_operator = admin.as_(key)
    assert (await admin.client.get(f"{API}/queue", headers=as_operator)).status_code == 200
    forbidden = await admin.client.put(
        f"{API}/settings/queue", json={"interval_s": 1}, headers=as_operator
    )
    assert forbidden.status_code == 403 and "admin role" in forbidden.json()["detail"]
    listed = (await admin.client.get(f"{API}/keys")).json()["items"]
    assert [k["name"] for k in listed] == ["ops"] and "key" not in listed[0]
    assert (await admin.client.delete(f"{API}/keys/{created.json()['id']}")).status_code == 204
    assert (await admin.client.get(f"{API}/queue", headers=as_operator)).status_code == 401


async def test_every_mutating_call_is_audited(admin: Admin) -> None:
    await admin.report_executor()
    operator = await admin.key("operator")
    job = (await admin.client.post(f"{API}/jobs", json={**JOB, "name": "audited"})).json()
    await admin.client.patch(f"{API}/jobs/{job['id']}", json={"description": "changed"})
    await admin.client.put(f"{API}/settings/queue", json={"interval_s": 1})
    [request] = await admin.runs(None)
    await admin.client.post(
        f"{API}/queue/{request.run_id}/execute-now", headers=admin.as_(operator)
    )
    await admin.client.delete(f"{API}/jobs/{job['id']}")
    rows = await audit_rows(admin)
    assert [(r.action, r.outcome) for r in rows] == [
        ("jobs.create", "ok"),
        ("jobs.update", "ok"),
        ("settings.queue", "ok"),
        ("queue.execute_now", "ok"),
        ("jobs.delete", "ok"),
    ]
    assert rows[3].actor.startswith("key:operator-")
    listed = (await admin.client.get(f"{API}/audit", params={"action": "jobs.update"})).json()
    assert [a["target"] for a in listed["items"]] == [f"job:{job['id']}"]


async def test_events_scripts_stats_and_health(admin: Admin) -> None:
    await admin.report_executor(["noop"])
    await admin.runs("lane", "lane", None)
    events = (await admin.client.get(f"{API}/events")).json()["items"]
    assert len(events) == 1 and events[0]["matched"] == 3 and len(events[0]["runs"]) == 3
    # An event no job matched is recorded too, and found by that.
    nothing = Event(event_id="unmatched-1", event_type="channel.renamed")
    async with admin.engine.begin() as conn:
        await ledger.enqueue(conn, [(nothing, [])], interval_s=0, now=datetime.now(UTC))
    for matched, expected in (("false", ["unmatched-1"]), ("true", [events[0]["event_id"]])):
        page = (await admin.client.get(f"{API}/events", params={"matched": matched})).json()
        assert [e["event_id"] for e in page["items"]] == expected
    scripts = (await admin.client.get(f"{API}/scripts")).json()
    assert [s["name"] for s in scripts] == ["noop"]
    stats = (await admin.client.get(f"{API}/stats")).json()
    assert (stats["queue"], stats["lanes_waiting"], stats["executors"]) == (3, 1, 1)
    assert stats["dead_letters"] == 0
    assert (await admin.client.get("/healthz")).json() == {"status": "ok"}
    assert (await admin.client.get("/readyz")).status_code == 200


async def test_metrics_expose_requests_and_tables(admin: Admin) -> None:
    await admin.runs("lane")
    await admin.client.get(f"{API}/queue")
    await admin.app.state.metrics_refresh()
    text = (await admin.client.get("/metrics", headers=admin.as_(None))).text
    assert (
        'jobmanager_admin_requests_total{method="GET",route="/api/v1/queue",status="200"}' in text
    )
    assert "jobmanager_admin_request_seconds_bucket" in text
    assert 'jobmanager_rows{table="queue"} 1.0' in text
    assert "jobmanager_lane_backlog 1.0" in text


async def test_invalid_input_is_422_never_500(admin: Admin) -> None:
    cases = [
        ("POST", f"{API}/jobs", b"not json"),
        ("POST", f"{API}/jobs", b"[]"),
        ("POST", f"{API}/jobs", b'{"name": 5}'),
        ("PUT", f"{API}/settings/queue", b'{"interval_s": "soon"}'),
        ("PUT", f"{API}/executed/cleanup", b'{"enabled": true, "extra": 1}'),
        ("POST", f"{API}/keys", b'{"name": "x", "role": "root"}'),
        ("GET", f"{API}/queue?state=exploded", None),
        ("GET", f"{API}/queue?since=yesterday", None),
        ("GET", f"{API}/queue?limmit=5", None),
        ("POST", f"{API}/jobs/{{job}}/test", b'{"event": {"event_type": 5}}'),
        ("POST", f"{API}/jobs/{{job}}/test", b'{"event_id": ""}'),
    ]
    await admin.report_executor()
    job = (await admin.client.post(f"{API}/jobs", json=JOB)).json()["id"]
    for method, url, body in cases:
        response = await admin.client.request(
            method,
            url.format(job=job),
            content=body,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 422, (method, url, response.status_code, response.text)
        assert response.json()["status"] == 422
    for huge in (f"{API}/runs/{10**30}", f"{API}/jobs/{2**31}", f"{API}/runs/0"):
        response = await admin.client.get(huge)
        assert response.status_code == 422, (huge, response.text)
    # Only digits are a run id; anything else names no resource.
    assert (await admin.client.get(f"{API}/runs/not-a-number")).status_code == 404
    name = f"n-{uuid.uuid4().hex}"
    assert (await admin.client.get(f"{API}/queue", params={"job": name})).json()["items"] == []

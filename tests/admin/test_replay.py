"""Replay past events into a job (`POST /jobs/{id}/replay`) against the real database and
broker: events recorded before the job existed (as the matcher records events no job
matched) become one run each for the matching ones, a second replay creates nothing, a
limit stops and says where to go on, and each call is audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from admin_kit import Admin
from sqlalchemy import select

from jobmanager.core.messages import Event
from jobmanager.store import ledger
from jobmanager.store.models import AuditEntry, Run

API = "/api/v1"


async def _record(admin: Admin, events: list[Event]) -> None:
    """Record events no job matches, as the matcher does."""
    async with admin.engine.begin() as conn:
        await ledger.enqueue(conn, [(e, []) for e in events], interval_s=0, now=datetime.now(UTC))


def _events(kind: str, count: int, origin: str) -> list[Event]:
    return [
        Event(
            event_id=f"{kind}-{uuid.uuid4().hex[:8]}",
            event_type=kind,
            data={"channel": {"channel_id": f"CH-{i}", "origin": origin}},
        )
        for i in range(count)
    ]


async def _job(admin: Admin, **fields: Any) -> int:
    await admin.report_executor()
    job = {
        "name": f"replayed-{uuid.uuid4().hex[:6]}",
        "trigger": {
            "event_type": "channel.updated",
            "conditions": [{"path": "data.channel.origin", "op": "eq", "value": "avcm"}],
        },
        "script": "ipx_update",
        "lane": "{{ data.channel.channel_id }}",
        **fields,
    }
    created = await admin.client.post(f"{API}/jobs", json=job)
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


async def _runs(admin: Admin, job_id: int) -> list[Any]:
    async with admin.engine.connect() as conn:
        query = select(Run.event_id, Run.state).where(Run.job_id == job_id).order_by(Run.id)
        return list((await conn.execute(query)).all())


async def test_replaying_a_window_runs_each_matching_event_once(admin: Admin) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    wanted = _events("channel.updated", 50, "avcm")
    await _record(admin, wanted[:25] + _events("channel.updated", 10, "other"))
    await _record(admin, _events("channel.removed", 10, "avcm") + wanted[25:])
    job_id = await _job(admin)
    window = {"since": since.isoformat()}

    dry = await admin.client.post(f"{API}/jobs/{job_id}/replay", json={**window, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json() == {
        "scanned": 70,
        "matched": 50,
        "enqueued": 50,
        "skipped": 0,
        "crashed": 0,
        "more": False,
        "next_since": None,
        "dry_run": True,
    }
    assert await _runs(admin, job_id) == []

    done = (await admin.client.post(f"{API}/jobs/{job_id}/replay", json=window)).json()
    assert (done["matched"], done["enqueued"], done["skipped"]) == (50, 50, 0)
    runs = await _runs(admin, job_id)
    assert sorted(r.event_id for r in runs) == sorted(e.event_id for e in wanted)
    # Fifty lanes (one per channel), each with its run at its head.
    assert {r.state for r in runs} == {"queued"}

    again = (await admin.client.post(f"{API}/jobs/{job_id}/replay", json=window)).json()
    assert (again["matched"], again["enqueued"], again["skipped"]) == (50, 0, 50)
    assert len(await _runs(admin, job_id)) == 50
    async with admin.engine.connect() as conn:
        audit = (
            await conn.execute(
                select(AuditEntry.target, AuditEntry.detail)
                .where(AuditEntry.action == "jobs.replay")
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [(t, d["enqueued"], d.get("dry_run", False)) for t, d in audit] == [
        (f"job:{job_id}", 50, True),
        (f"job:{job_id}", 50, False),
        (f"job:{job_id}", 0, False),
    ]


async def test_a_limit_stops_the_replay_and_says_where_to_go_on(admin: Admin) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    first, rest = _events("channel.updated", 5, "avcm"), _events("channel.updated", 3, "avcm")
    await _record(admin, first)
    await _record(admin, rest)
    job_id = await _job(admin)

    part = await admin.client.post(
        f"{API}/jobs/{job_id}/replay", json={"since": since.isoformat(), "limit": 5}
    )
    body = part.json()
    assert (body["enqueued"], body["more"]) == (5, True), body
    on = await admin.client.post(
        f"{API}/jobs/{job_id}/replay", json={"since": body["next_since"], "limit": 5}
    )
    body = on.json()
    # From where it stopped: the batch's events share their time, so they are read again
    # and skipped; the rest are enqueued.
    assert (body["enqueued"], body["more"]) == (3, False), body
    assert len(await _runs(admin, job_id)) == 8


async def test_a_window_outside_the_events_or_a_disabled_job_creates_nothing(
    admin: Admin,
) -> None:
    await _record(admin, _events("channel.updated", 3, "avcm"))
    job_id = await _job(admin)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    empty = (await admin.client.post(f"{API}/jobs/{job_id}/replay", json={"since": future})).json()
    assert (empty["scanned"], empty["enqueued"]) == (0, 0)

    off = await _job(admin, enabled=False)
    refused = await admin.client.post(
        f"{API}/jobs/{off}/replay", json={"since": "2026-01-01T00:00:00Z"}
    )
    assert refused.status_code == 409 and "disabled" in refused.json()["detail"]
    missing = await admin.client.post(
        f"{API}/jobs/999999/replay", json={"since": "2026-01-01T00:00:00Z"}
    )
    assert missing.status_code == 404
    bad = await admin.client.post(f"{API}/jobs/{job_id}/replay", json={"limit": 5})
    assert bad.status_code == 422, "since is required"

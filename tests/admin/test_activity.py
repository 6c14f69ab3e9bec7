"""The Overview's one call: runs that ended per bucket by outcome, the jobs that fail most,
the backlog, paused jobs, executors and dead letters, aggregated in Postgres."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from admin_kit import Admin
from sqlalchemy import update

from jobmanager.store.models import Run

API = "/api/v1"


async def test_the_last_hour_by_minute_and_the_jobs_that_fail_most(admin: Admin) -> None:
    for result, job in [(3, "steady"), (3, "steady"), (2, "steady"), (2, "broken"), (2, "broken")]:
        await admin.run_to_end(result, job=job)
    old = await admin.run_to_end(2, job="long-ago")
    async with admin.engine.begin() as conn:  # ended two hours ago: outside the hour
        await conn.execute(
            update(Run)
            .where(Run.id == old)
            .values(finished_at=datetime.now(UTC) - timedelta(hours=2))
        )
    await admin.runs("waiting")
    await admin.report_executor()
    body = (await admin.client.get(f"{API}/activity")).json()
    assert (body["window"], body["bucket_s"], len(body["buckets"])) == ("hour", 60, 60)
    recent = body["buckets"][-2:]  # this minute, or the one before if they straddle two
    outcomes = (sum(b["succeeded"] for b in recent), sum(b["failed"] for b in recent))
    assert outcomes == (2, 3), "the last minute holds the five runs"
    assert sum(b["succeeded"] + b["failed"] for b in body["buckets"]) == 5
    starts = [datetime.fromisoformat(b["at"]) for b in body["buckets"]]
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(starts))
    assert [(j["job"], j["failed"], j["succeeded"]) for j in body["jobs"]] == [
        ("broken", 2, 0),
        ("steady", 1, 2),
    ]
    assert body["jobs"][1]["failure_rate"] == 1 / 3
    assert (body["queued"], body["lanes_waiting"]) == (1, 1)
    assert len(body["executors"]) == 1 and body["executors"][0]["concurrency"] == 4
    assert body["dead_letters"] == 0
    day = (await admin.client.get(f"{API}/activity", params={"window": "day"})).json()
    assert (day["bucket_s"], len(day["buckets"])) == (900, 96)
    assert sum(b["failed"] for b in day["buckets"]) == 4, "the one two hours ago counts too"


async def test_paused_jobs_are_listed_with_their_reason(admin: Admin) -> None:
    await admin.report_executor()
    created = await admin.client.post(
        f"{API}/jobs",
        json={"name": "held", "trigger": {"event_type": "x"}, "script": "noop"},
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    await admin.client.post(f"{API}/jobs/{job_id}/pause")
    [paused] = (await admin.client.get(f"{API}/activity")).json()["paused"]
    assert (paused["id"], paused["name"]) == (job_id, "held")
    assert paused["paused_reason"].startswith("paused by ")


async def test_a_window_it_does_not_know_is_422(admin: Admin) -> None:
    answer = await admin.client.get(f"{API}/activity", params={"window": "week"})
    assert answer.status_code == 422

"""A job the API refuses: every problem in one 422, each in words next to pydantic's own
fields (`loc`, `msg`, `type`), on create and on change alike."""

from __future__ import annotations

from typing import Any

from admin_kit import Admin

API = "/api/v1"

JOB: dict[str, Any] = {
    "name": "ipx-update",
    "trigger": {"event_type": "channel.updated"},
    "script": "ipx_update",
    "lane": "{{ data.channel.channel_id }}",
}
WRONG: dict[str, Any] = {
    "name": "-ipx",
    "timeout_s": 0,
    "lane": None,
    "cancel_on": [{"event_type": "channel.removed"}],
}


async def test_a_job_with_several_wrong_fields_hears_of_all_of_them(admin: Admin) -> None:
    await admin.report_executor(["ipx_update"])
    answer = await admin.client.post(f"{API}/jobs", json={**JOB, **WRONG})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    errors = {tuple(e["loc"]): e for e in problem["errors"]}
    assert list(errors) == [("body", "name"), ("body", "timeout_s"), ("body", "cancel_on")]
    name = errors[("body", "name")]
    assert name["type"] == "string_pattern_mismatch"
    assert name["msg"].startswith("String should match pattern")
    assert name["message"] == (
        "name may hold letters, digits, spaces and _ . : - and must start with a letter or digit"
    )
    assert errors[("body", "timeout_s")]["message"] == (
        "timeout_s must be more than 0 and at most 86,400 seconds"
    )
    assert errors[("body", "cancel_on")]["message"].startswith("cancel_on needs a lane")
    assert problem["detail"].startswith("3 problems: name may hold letters")


async def test_a_change_is_worded_for_the_job_as_a_whole(admin: Admin) -> None:
    await admin.report_executor(["ipx_update"])
    job = (await admin.client.post(f"{API}/jobs", json=JOB)).json()
    answer = await admin.client.patch(
        f"{API}/jobs/{job['id']}", json={"max_attempts": 0, "debounce_s": 5, "debounce_max_s": 1}
    )
    assert answer.status_code == 422, answer.text
    assert [e["message"] for e in answer.json()["errors"]] == [
        "max_attempts must be at least 1 and at most 100",
        "debounce_max_s (1) must be at least debounce_s (5)",
    ]


async def test_other_bodies_and_queries_are_worded_too(admin: Admin) -> None:
    limit = await admin.client.get(f"{API}/queue", params={"limit": 501})
    assert limit.json()["detail"] == "limit must be at most 500"
    missing = await admin.client.post(f"{API}/keys", json={"role": "viewer"})
    assert missing.json()["errors"][0]["message"] == "name is required"

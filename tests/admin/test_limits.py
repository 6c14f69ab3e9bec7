"""What the admin API refuses before it does any work, and the size of what it accepts
(docs/SECURITY.md), against the real database and broker:

* a caller without a valid key (or with too low a role) is refused before the body is read;
* a body over the limit is a 413, decided while it is read, with or without Content-Length,
  in-process and through a real uvicorn server (chunked);
* an id of thousands of digits is a 4xx on every route with a path parameter;
* a body that is not I-JSON (NaN, Infinity, an unpaired surrogate) is a 422 that says why;
* condition values have caps (string length, list length, JSON size).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import httpx
import pytest
from admin_kit import Admin, admin_settings
from fastapi.routing import APIRoute
from pydantic import ValidationError
from served import Server

from jobmanager.admin.app import create_app
from jobmanager.admin.config import AdminSettings
from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import (
    MAX_VALUE_BYTES,
    MAX_VALUE_CHARS,
    MAX_VALUE_ITEMS,
    Condition,
    JobSpec,
    Trigger,
)
from jobmanager.store import jobs as job_store

API = "/api/v1"
PROBLEM = "application/problem+json"
MiB = 1024 * 1024
CHUNK = 64 * 1024


class Body:
    """A request body streamed in chunks (chunked transfer: no Content-Length), which counts
    how many chunks the server pulled."""

    def __init__(self, size: int, chunk: int = CHUNK) -> None:
        self.size, self.chunk, self.pulled = size, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # A JSON array of zeros: what the review sent, 100 MiB of it.
        sent = 0
        while sent < self.size:
            self.pulled += 1
            piece = b"[" if sent == 0 else b"0," * (self.chunk // 2)
            sent += len(piece)
            yield piece


def _request(
    admin: Admin, method: str, url: str, body: Body, key: str | None, **headers: str
) -> httpx.Request:
    request = admin.client.build_request(
        method, url, content=body, headers={"Content-Type": "application/json", **headers}
    )
    del request.headers["Authorization"]
    if key is not None:
        request.headers["Authorization"] = f"Bearer {key}"
    return request


# -- authentication before the body ----------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "status"), [("no key", 401), ("unknown key", 401), ("viewer", 403)]
)
async def test_a_caller_without_a_valid_key_is_refused_before_the_body_is_read(
    admin: Admin, caller: str, status: int
) -> None:
    keys = {"no key": None, "unknown key": "jm_" + "Q" * 43}
    key = keys[caller] if caller in keys else await admin.key(caller)
    body = Body(100 * MiB)
    response = await admin.client.send(_request(admin, "POST", f"{API}/jobs", body, key))
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert body.pulled == 0, f"{body.pulled} chunks of the body were read before refusing"


# -- the body limit --------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413_while_it_is_read(admin: Admin) -> None:
    assert admin.settings.admin_max_body_bytes == MiB  # the default
    body = Body(100 * MiB)
    token = admin.settings.admin_token.get_secret_value()
    response = await admin.client.send(_request(admin, "POST", f"{API}/jobs", body, token))
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == PROBLEM
    assert "larger than 1048576 bytes" in response.json()["detail"]
    # The limit and one chunk at most: the rest was never read.
    assert body.pulled <= MiB // CHUNK + 2, body.pulled


async def test_a_declared_content_length_over_the_limit_is_413_before_reading(
    admin: Admin,
) -> None:
    body = Body(2 * MiB)
    token = admin.settings.admin_token.get_secret_value()
    request = _request(
        admin, "PUT", f"{API}/settings/queue", body, token, **{"Content-Length": str(2 * MiB)}
    )
    response = await admin.client.send(request)
    assert response.status_code == 413, response.text
    assert body.pulled == 0


async def test_a_body_within_the_limit_is_read_as_before(admin: Admin) -> None:
    response = await admin.client.put(
        f"{API}/settings/queue",
        content=b'{"interval_s": 1.5}' + b" " * (MiB - 100),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text


async def test_a_chunked_body_over_the_limit_is_413_from_a_real_server(
    amqp_url: str, database_url: str, topology: Topology
) -> None:
    settings = admin_settings(amqp_url, database_url, topology, admin_max_body_bytes=64 * 1024)
    token = settings.admin_token.get_secret_value()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with Server(create_app(settings)) as server, httpx.AsyncClient() as client:
        body = Body(96 * 1024, chunk=8 * 1024)
        response = await client.post(f"{server.url}{API}/jobs", content=body, headers=headers)
        assert response.status_code == 413, response.text
        assert "larger than 65536 bytes" in response.json()["detail"]
        async with asyncio.timeout(15):  # the broker connects in the background
            while (await client.get(f"{server.url}/readyz")).status_code != 200:
                await asyncio.sleep(0.1)
        small = await client.put(
            f"{server.url}{API}/settings/queue", json={"interval_s": 0}, headers=headers
        )
        assert small.status_code == 200, small.text


# -- ids beyond Python's int conversion --------------------------------------------------------


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(included.routes)


def _routes_with_path_parameters() -> list[tuple[str, str]]:
    app = create_app(AdminSettings())
    found = sorted(
        {
            (method, route.path)
            for route in _api_routes(app.routes)
            if "{" in route.path
            for method in route.methods
        }
    )
    assert len(found) >= 10, found  # the walk finds the routes (ids, runs, keys, files)
    return found


HUGE = "9" * 5000  # Python converts at most 4,300 digits to an int


async def test_an_id_of_thousands_of_digits_is_a_4xx_on_every_route(admin: Admin) -> None:
    failures = []
    for method, path in _routes_with_path_parameters():
        url = re.sub(r"\{[^}]+\}", HUGE, path)
        for key in (admin.settings.admin_token.get_secret_value(), None):
            request = admin.client.build_request(
                method, url, json={} if method in ("POST", "PUT", "PATCH") else None
            )
            del request.headers["Authorization"]
            if key is not None:
                request.headers["Authorization"] = f"Bearer {key}"
            response = await admin.client.send(request)
            if not 400 <= response.status_code < 500:
                failures.append(f"{method} {path} -> {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


async def test_an_id_of_thousands_of_digits_is_404(admin: Admin) -> None:
    response = await admin.client.get(f"{API}/jobs/{HUGE}")
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == PROBLEM
    # Ids out of their column's range but convertible stay a 422, as documented.
    response = await admin.client.get(f"{API}/runs/{2**63}")
    assert response.status_code == 422, response.text


# -- I-JSON bodies -----------------------------------------------------------------------------


async def _job_id(admin: Admin) -> int:
    spec = JobSpec(name="dry", trigger=Trigger(event_type="channel.*"), script="noop")
    async with admin.engine.begin() as conn:
        job_id, _ = await job_store.upsert(conn, spec)
    return job_id


EVENT = '{"event": {"event_id": "e-1", "event_type": "channel.updated", "data": {"v": %s}}}'


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"\\ud800"', "body.event.data.v: a string holds an unpaired surrogate"),
        ('"x\\udfff"', "body.event.data.v: a string holds an unpaired surrogate"),
        ("NaN", "body: NaN is not a JSON number"),
        ("Infinity", "body: Infinity is not a JSON number"),
        ("-Infinity", "body: -Infinity is not a JSON number"),
        ('"\\u0000"', "a string contains a NUL character"),
        ("[" * 70 + "]" * 70, "nested deeper than 64 levels"),
    ],
    ids=["surrogate", "low-surrogate", "nan", "infinity", "-infinity", "nul", "deep"],
)
async def test_a_dry_run_with_an_event_that_is_not_storable_json_is_422(
    admin: Admin, value: str, reason: str
) -> None:
    job_id = await _job_id(admin)
    response = await admin.client.post(
        f"{API}/jobs/{job_id}/test",
        content=(EVENT % value).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert reason in response.json()["detail"], response.json()


async def test_a_dry_run_with_a_paired_surrogate_works(admin: Admin) -> None:
    job_id = await _job_id(admin)
    response = await admin.client.post(
        f"{API}/jobs/{job_id}/test",
        content=(EVENT % '"\\ud83d\\ude00"').encode(),  # U+1F600, written as a pair
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["event"]["data"]["v"] == "\U0001f600"


async def test_an_unpaired_surrogate_anywhere_in_a_body_is_422_not_500(admin: Admin) -> None:
    response = await admin.client.post(
        f"{API}/keys",
        content=b'{"name": "ops-\\ud800", "role": "viewer"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "name"]


# -- caps on condition values ------------------------------------------------------------------


def _job(condition: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "capped",
        "trigger": {"event_type": "channel.*", "conditions": [condition]},
        "script": "noop",
    }


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        (
            {"path": "data.x", "op": "regex", "value": "a" * (MAX_VALUE_CHARS + 1)},
            f"a string of 1001 characters (at most {MAX_VALUE_CHARS})",
        ),
        (
            {"path": "data.x", "op": "eq", "value": "a" * (MAX_VALUE_CHARS + 1)},
            "at most 1000",
        ),
        (
            {"path": "data.x", "op": "in", "value": list(range(MAX_VALUE_ITEMS + 1))},
            f"1001 items (at most {MAX_VALUE_ITEMS})",
        ),
        (
            {"path": "data.x", "op": "in", "value": ["a" * 900] * 100},
            f"(at most {MAX_VALUE_BYTES})",
        ),
    ],
    ids=["long-regex", "long-string", "long-list", "large-value"],
)
async def test_a_condition_value_over_its_cap_is_422(
    admin: Admin, condition: dict[str, Any], reason: str
) -> None:
    await admin.report_executor()
    response = await admin.client.post(f"{API}/jobs", json=_job(condition))
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"], response.json()


async def test_a_condition_value_at_its_caps_is_accepted(admin: Admin) -> None:
    await admin.report_executor()
    for condition in (
        {"path": "data.x", "op": "regex", "value": "a" * MAX_VALUE_CHARS},
        {"path": "data.x", "op": "in", "value": [str(i) for i in range(MAX_VALUE_ITEMS)]},
    ):
        job = {**_job(condition), "name": f"capped-{condition['op']}"}
        response = await admin.client.post(f"{API}/jobs", json=job)
        assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "condition",
    [
        {"path": "data.x", "op": "regex", "value": "a" * 1_200_000},  # the review's 1.2 MB
        {"path": "data.x", "op": "in", "value": list(range(200_000))},  # and 200,000 items
    ],
    ids=["1.2MB-regex", "200k-list"],
)
def test_the_reviews_values_are_refused_by_the_job_model(condition: dict[str, Any]) -> None:
    # Through the API the body limit stops them first; `jobmanager apply` reads no body.
    with pytest.raises(ValidationError, match="at most 1000"):
        Condition.model_validate(condition)

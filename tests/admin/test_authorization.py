"""Who may call what: the role matrix of the admin API, built from the app's own routes.

Every operation must declare `x-required-role` (published by `RoleRoute`): those of the
OpenAPI document and the routes left out of it (`/openapi.json`, `/docs`, the console's pages),
and the declared role must be the one SPEC §7 gives. Each operation is called by four callers
(no key, a viewer, an operator and an admin key) and must answer 401 without a key (unless
public), 403 to a key whose role ranks below the required one, and a 2xx to a sufficient role;
a refused call must have changed nothing (the same call then succeeds for an admin). The 2xx
needs real data: each operation has a *scenario* that creates what one successful call needs
(a queued run, a failed run, a job, a key...) and returns that call. A new route without a
scenario fails here, so no route escapes the matrix.

Besides: wrong, revoked and garbled keys are 401 (never 500), the bootstrap token is an
admin, and a key is stored only as its hash.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from admin_kit import Admin, own_world, running
from fastapi.routing import APIRoute
from sqlalchemy import select, text

from jobmanager.admin.app import create_app
from jobmanager.admin.auth import RANK, create_key, hash_key
from jobmanager.admin.config import AdminSettings
from jobmanager.jobs.spec import JobSpec, Trigger
from jobmanager.store import jobs as job_store
from jobmanager.store.models import ApiKey

PROBLEM = "application/problem+json"
API = "/api/v1"
CALLERS = ("no key", "viewer", "operator", "admin")


def _api_routes(routes: Iterable[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, also inside included routers (which FastAPI now keeps unflattened)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(included.routes)


def _operations() -> list[tuple[str, str, str | None]]:
    """(method, path, declared role) of every operation of the OpenAPI document, then of the
    routes left out of it (`/openapi.json`, `/docs`, the console's pages). Building the app
    touches no service."""
    app = create_app(AdminSettings())
    documented = [
        (method.upper(), path, operation.get("x-required-role"))
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
    ]
    routes = list(_api_routes(app.routes))
    walked = {(method, route.path_format) for route in routes for method in route.methods}
    # The walk must find what the document lists, or it would miss undocumented routes too.
    assert {(m, p) for m, p, _ in documented} <= walked, "the route walk misses routes"
    hidden = [
        (method, route.path_format, (route.openapi_extra or {}).get("x-required-role"))
        for route in routes
        if not route.include_in_schema
        for method in sorted(route.methods)
    ]
    return documented + hidden


OPERATIONS = _operations()


@pytest.fixture(scope="module")
async def admin(amqp_url: str, postgres_url: str, template_database: str) -> AsyncIterator[Admin]:
    """One running app for the whole module, in place of conftest's per-test `admin` (which
    costs about a second each, and the matrix has nearly two hundred cases). The cases stay
    independent: each creates its own keys and resources and relies on nothing another left."""
    async with own_world(amqp_url, postgres_url, template_database, "authz") as (settings, engine):
        async with running(settings, engine) as admin:
            async with asyncio.timeout(10):  # the broker connects in the background
                while not admin.app.state.broker.ready:
                    await asyncio.sleep(0.05)
            yield admin


# -- scenarios: what one successful call of each operation needs ---------------------------


@dataclass(frozen=True)
class Call:
    """A call that must succeed: the path's parameters and the JSON body (None: no body)."""

    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None


Scenario = Callable[[Admin], Awaitable[Call]]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _spec(**changes: Any) -> JobSpec:
    return JobSpec(
        name=changes.pop("name", _unique("job")),
        trigger=Trigger(event_type="channel.*"),
        script="noop",
        command_template="{{ data.channel.channel_id }}",
        **changes,
    )


async def _job(admin: Admin) -> int:
    async with admin.engine.begin() as conn:
        job_id, _ = await job_store.upsert(conn, _spec())
    return job_id


async def _queued_run(admin: Admin) -> int:
    [request] = await admin.runs(_unique("lane"))
    return request.run_id


async def _key_id(admin: Admin) -> int:
    async with admin.engine.begin() as conn:
        key_id, _ = await create_key(conn, name=_unique("doomed"), role="viewer")
    return key_id


async def nothing(_: Admin) -> Call:
    return Call()


async def new_job(admin: Admin) -> Call:
    await admin.report_executor()  # job creation checks the script against the catalogue
    return Call(json=_spec().model_dump(mode="json"))


async def a_job(admin: Admin) -> Call:
    return Call({"job_id": await _job(admin)})


async def job_patch(admin: Admin) -> Call:
    return Call({"job_id": await _job(admin)}, {"description": "changed", "enabled": False})


async def job_dry_run(admin: Admin) -> Call:
    event = {
        "event_id": _unique("event"),
        "event_type": "channel.updated",
        "data": {"channel": {"channel_id": "ESPN-HD"}},
    }
    return Call({"job_id": await _job(admin)}, {"event": event})


async def replay_dry_run(admin: Admin) -> Call:
    return Call({"job_id": await _job(admin)}, {"since": "2026-01-01T00:00:00Z", "dry_run": True})


async def queued_run(admin: Admin) -> Call:
    return Call({"run_id": await _queued_run(admin)})


async def succeeded_run(admin: Admin) -> Call:
    return Call({"run_id": await admin.run_to_end(3, "done")})


async def failed_run(admin: Admin) -> Call:
    return Call({"run_id": await admin.run_to_end(2, "broken")})


async def cleanup_settings(_: Admin) -> Call:
    return Call(
        json={
            "enabled": False,
            "method": "both",
            "max_rows": 5000,
            "max_age_s": 86400,
            "cleanup_amount": 100,
        }
    )


async def queue_settings(_: Admin) -> Call:
    return Call(json={"interval_s": 1.5})


async def new_key(_: Admin) -> Call:
    return Call(json={"name": _unique("new"), "role": "operator"})


async def a_key(admin: Admin) -> Call:
    return Call({"key_id": await _key_id(admin)})


async def bulk_dry_run(_: Admin) -> Call:
    return Call(json={"dry_run": True})


async def console_asset(_: Admin) -> Call:
    return Call({"name": "js/api.js"})


async def docs_asset(_: Admin) -> Call:
    return Call({"name": "swagger-ui.css"})


SCENARIOS: dict[tuple[str, str], Scenario] = {
    ("GET", "/healthz"): nothing,
    ("GET", "/readyz"): nothing,
    ("GET", "/metrics"): nothing,
    ("GET", "/openapi.json"): nothing,
    ("GET", "/docs"): nothing,
    ("GET", "/docs/assets/{name}"): docs_asset,
    ("GET", f"{API}/jobs"): nothing,
    ("POST", f"{API}/jobs"): new_job,
    ("GET", f"{API}/jobs/{{job_id}}"): a_job,
    ("PATCH", f"{API}/jobs/{{job_id}}"): job_patch,
    ("DELETE", f"{API}/jobs/{{job_id}}"): a_job,
    ("POST", f"{API}/jobs/{{job_id}}/test"): job_dry_run,
    ("POST", f"{API}/jobs/{{job_id}}/pause"): a_job,
    ("POST", f"{API}/jobs/{{job_id}}/replay"): replay_dry_run,
    ("POST", f"{API}/jobs/{{job_id}}/resume"): a_job,
    ("GET", f"{API}/queue"): nothing,
    ("DELETE", f"{API}/queue/{{run_id}}"): queued_run,
    ("POST", f"{API}/queue/{{run_id}}/execute-now"): queued_run,
    ("POST", f"{API}/queue/{{run_id}}/cancel"): queued_run,
    ("GET", f"{API}/runs/{{run_id}}"): succeeded_run,
    ("GET", f"{API}/executed"): nothing,
    ("DELETE", f"{API}/executed/{{run_id}}"): succeeded_run,
    ("GET", f"{API}/executed/cleanup"): nothing,
    ("PUT", f"{API}/executed/cleanup"): cleanup_settings,
    ("GET", f"{API}/failed"): nothing,
    ("DELETE", f"{API}/failed/{{run_id}}"): failed_run,
    ("GET", f"{API}/failed/cleanup"): nothing,
    ("PUT", f"{API}/failed/cleanup"): cleanup_settings,
    ("POST", f"{API}/failed/{{run_id}}/execute"): failed_run,
    ("POST", f"{API}/failed/execute"): bulk_dry_run,
    ("DELETE", f"{API}/failed"): bulk_dry_run,
    ("DELETE", f"{API}/executed"): bulk_dry_run,
    ("POST", f"{API}/queue/remove"): bulk_dry_run,
    ("GET", f"{API}/settings/queue"): nothing,
    ("PUT", f"{API}/settings/queue"): queue_settings,
    ("GET", f"{API}/events"): nothing,
    ("GET", f"{API}/audit"): nothing,
    ("GET", f"{API}/scripts"): nothing,
    ("GET", f"{API}/executors"): nothing,
    ("GET", f"{API}/stats"): nothing,
    ("GET", f"{API}/activity"): nothing,
    ("GET", f"{API}/keys"): nothing,
    ("POST", f"{API}/keys"): new_key,
    ("DELETE", f"{API}/keys/{{key_id}}"): a_key,
    ("GET", f"{API}/whoami"): nothing,
    # The console's pages hold no data; the browser fetches it from the API with its key.
    ("GET", "/"): nothing,
    ("GET", "/sign-in"): nothing,
    ("GET", "/overview"): nothing,
    ("GET", "/jobs"): nothing,
    ("GET", "/queue"): nothing,
    ("GET", "/executed"): nothing,
    ("GET", "/failed"): nothing,
    ("GET", "/runs/{run_id}"): succeeded_run,
    ("GET", "/events"): nothing,
    ("GET", "/audit"): nothing,
    ("GET", "/executors"): nothing,
    # Public like the others: the keys come from the API, which admits admins only.
    ("GET", "/keys"): nothing,
    ("GET", "/static/{name}"): console_asset,
}


# -- calling -------------------------------------------------------------------------------


async def send(
    admin: Admin, method: str, url: str, *, key: str | None, json: Any = None
) -> httpx.Response:
    """A request with `Authorization: Bearer <key>`, or no Authorization header at all."""
    request = admin.client.build_request(method, url, json=json)
    del request.headers["Authorization"]
    if key is not None:
        request.headers["Authorization"] = f"Bearer {key}"
    return await admin.client.send(request)


def fill(path: str, params: dict[str, Any]) -> str:
    """The path template with its parameters (`{run_id}`, `{name:path}`) filled in."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: str(params[m.group(1)]), path)


def expected_status(required: str, caller: str) -> str:
    if required == "public":
        return "2xx"
    if caller == "no key":
        return "401"
    return "2xx" if RANK[caller] >= RANK[required] else "403"


def describe(response: httpx.Response) -> str:
    request = response.request
    return f"{request.method} {request.url.path} -> {response.status_code}: {response.text[:500]}"


# -- the matrix ----------------------------------------------------------------------------


def test_every_operation_declares_a_role() -> None:
    missing = [f"{method} {path}" for method, path, role in OPERATIONS if role is None]
    assert not missing, f"operations without x-required-role (use auth.requires): {missing}"
    unknown = [f"{m} {p}: {r}" for m, p, r in OPERATIONS if r is not None and r not in RANK]
    assert not unknown, f"unknown roles: {unknown}"


OPERATOR_ACTIONS = {
    ("DELETE", f"{API}/queue/{{run_id}}"),
    ("POST", f"{API}/queue/{{run_id}}/execute-now"),
    ("POST", f"{API}/queue/{{run_id}}/cancel"),  # SPEC §12
    ("POST", f"{API}/failed/{{run_id}}/execute"),
    ("POST", f"{API}/failed/execute"),  # SPEC §13: bulk, the roles of the single actions
    ("POST", f"{API}/queue/remove"),
    ("POST", f"{API}/jobs/{{job_id}}/pause"),  # SPEC §12
    ("POST", f"{API}/jobs/{{job_id}}/resume"),
}


def specified_role(method: str, path: str) -> str:
    """The role SPEC §7 gives an operation: viewer reads, operator removes and executes (and,
    §12, cancels a run, pauses and resumes a job), admin does the rest (jobs, settings,
    cleanup, deletes, keys). Outside the API everything is public: health, metrics, the
    documentation and the console's pages (which hold no data)."""
    if not path.startswith(f"{API}/"):
        return "public"
    if path.startswith(f"{API}/keys"):
        return "admin"
    if method == "GET" or (method, path) == ("POST", f"{API}/jobs/{{job_id}}/test"):
        return "viewer"  # the dry run only reads
    if (method, path) in OPERATOR_ACTIONS:
        return "operator"
    return "admin"


def test_the_declared_roles_follow_the_specification() -> None:
    wrong = [
        f"{method} {path}: declares {role}, the specification says {specified_role(method, path)}"
        for method, path, role in OPERATIONS
        if role is not None and role != specified_role(method, path)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_scenarios_match_the_operations() -> None:
    """A missing scenario fails its cases below; a stale one would hide a gap in the matrix."""
    operations = {(method, path) for method, path, _ in OPERATIONS}
    missing = sorted(operations - set(SCENARIOS))
    assert not missing, f"add a scenario for each of {missing}"
    stale = sorted(set(SCENARIOS) - operations)
    assert not stale, f"scenarios for operations the app does not have: {stale}"


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(
    ("method", "path", "role"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
async def test_role_matrix(
    admin: Admin, method: str, path: str, role: str | None, caller: str
) -> None:
    if role is None:
        pytest.fail(f"{method} {path} declares no x-required-role (use auth.requires)")
    scenario = SCENARIOS.get((method, path))
    if scenario is None:
        pytest.fail(f"add a scenario for {method} {path} to SCENARIOS in {__name__}")
    call = await scenario(admin)
    url = fill(path, call.params)
    key = None if caller == "no key" else await admin.key(caller)

    response = await send(admin, method, url, key=key, json=call.json)

    expected = expected_status(role, caller)
    if expected == "2xx":  # or a redirect: the console's `/` sends the browser on
        assert response.is_success or response.is_redirect, describe(response)
        return
    assert response.status_code == int(expected), describe(response)
    assert response.headers["content-type"] == PROBLEM, describe(response)
    if expected == "401":
        assert response.headers["www-authenticate"] == "Bearer", describe(response)
    # The refused call changed nothing: the very same call still succeeds for an admin.
    again = await send(
        admin, method, url, key=admin.settings.admin_token.get_secret_value(), json=call.json
    )
    assert again.is_success or again.is_redirect, f"after a refused call: {describe(again)}"


# -- keys ----------------------------------------------------------------------------------


KEYS_URL = f"{API}/keys"
QUEUE_URL = f"{API}/queue"


@pytest.mark.parametrize(
    "key",
    [
        "jm_" + "Q" * 43,  # well-formed, never issued
        "Q" * 43,  # without the prefix
        "jm_",
        "x" * 10_000,
    ],
    ids=["unknown", "no-prefix", "prefix-only", "huge"],
)
async def test_a_wrong_key_is_401(admin: Admin, key: str) -> None:
    for url in (QUEUE_URL, KEYS_URL):
        response = await send(admin, "GET", url, key=key)
        assert response.status_code == 401, describe(response)
        assert response.headers["content-type"] == PROBLEM


async def test_a_near_miss_of_the_bootstrap_token_is_401(admin: Admin) -> None:
    token = admin.settings.admin_token.get_secret_value()
    for wrong in (token[:-1], token[1:], token + "x", token.upper()):
        response = await send(admin, "GET", KEYS_URL, key=wrong)
        assert response.status_code == 401, describe(response)


async def test_a_revoked_key_is_401(admin: Admin) -> None:
    async with admin.engine.begin() as conn:
        key_id, key = await create_key(conn, name="soon-revoked", role="admin")
    assert (await send(admin, "GET", KEYS_URL, key=key)).status_code == 200

    revoked = await admin.client.delete(f"{KEYS_URL}/{key_id}")
    assert revoked.status_code == 204, describe(revoked)

    for url in (QUEUE_URL, KEYS_URL):
        response = await send(admin, "GET", url, key=key)
        assert response.status_code == 401, describe(response)
    again = await admin.client.delete(f"{KEYS_URL}/{key_id}")
    assert again.status_code == 404, describe(again)


async def test_the_bootstrap_token_is_an_admin(admin: Admin) -> None:
    token = admin.settings.admin_token.get_secret_value()
    listed = await send(admin, "GET", KEYS_URL, key=token)
    assert listed.status_code == 200, describe(listed)
    created = await send(admin, "POST", KEYS_URL, key=token, json={"name": "ops", "role": "admin"})
    assert created.status_code == 201, describe(created)
    settings = await send(
        admin, "PUT", f"{API}/settings/queue", key=token, json={"interval_s": 2.0}
    )
    assert settings.status_code == 200, describe(settings)

    audit = await admin.client.get(f"{API}/audit", params={"actor": "bootstrap-token"})
    entries = {(a["actor"], a["action"], a["outcome"]) for a in audit.json()["items"]}
    assert entries >= {
        ("bootstrap-token", "keys.create", "ok"),
        ("bootstrap-token", "settings.queue", "ok"),
    }


GARBAGE: list[bytes] = [
    b"",
    b"Bearer",
    b"Bearer ",
    b"bearer",
    b"Basic dXNlcjpwYXNzd29yZA==",
    b"Token jm_abc",
    b"Bearer a b c",
    b"Bearer jm_\xe9\xff\xfe",
    b"\xff\xfe\xfd",
    b"Bearer " + b"A" * 20_000,
    b"Bearer\tjm_tab",
    b"Bearer jm_" + b"%00" * 30,
]


@pytest.mark.parametrize("value", GARBAGE, ids=[f"garbage{i}" for i in range(len(GARBAGE))])
async def test_a_garbled_authorization_header_is_401_not_500(admin: Admin, value: bytes) -> None:
    for url in (QUEUE_URL, KEYS_URL):
        request = admin.client.build_request("GET", url, headers={"Authorization": value})
        response = await admin.client.send(request)
        assert response.status_code == 401, describe(response)
        assert response.headers["content-type"] == PROBLEM


async def test_a_key_is_stored_only_as_its_hash(admin: Admin) -> None:
    created = await admin.client.post(KEYS_URL, json={"name": "hashed", "role": "viewer"})
    assert created.status_code == 201, describe(created)
    body = created.json()
    key = body["key"]
    assert (await send(admin, "GET", QUEUE_URL, key=key)).status_code == 200

    async with admin.engine.connect() as conn:
        row = (await conn.execute(select(ApiKey.__table__).where(ApiKey.id == body["id"]))).one()
        assert row.key_hash == hash_key(key)
        assert key.startswith(row.prefix) and len(row.prefix) < len(key) // 2
        # No column of api_keys holds the key ...
        for column, value in row._mapping.items():
            assert key not in str(value), f"api_keys.{column} holds the key"
        # ... and neither does any other table (the audit log, say).
        tables = await conn.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        )
        for table in tables.all():
            found = await conn.scalar(
                text(f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, :key) > 0'),  # noqa: S608
                {"key": key},
            )
            assert found == 0, f"table {table} holds the key"

    listed = (await admin.client.get(KEYS_URL)).json()["items"]
    assert all("key" not in item and "key_hash" not in item for item in listed)

"""Property-based tests of the admin API with Schemathesis (SPEC §7; §9: 4xx, never 5xx).

For every operation of the app's OpenAPI document Schemathesis sends its examples, its
coverage cases (boundary values, missing, malformed and wrongly typed parameters and bodies)
and `MAX_EXAMPLES` fuzzed requests, then checks each response; failures are reported per
operation (`test_...[GET /api/v1/queue]`). Two tests make the same deterministic requests:

* `test_no_request_gets_a_server_error` checks only "not a server error", so that a 500 is
  found even in an operation whose documentation is wrong (Schemathesis stops exploring an
  operation at its first failure);
* `test_every_response_conforms_to_the_document` runs every check Schemathesis has: status
  codes, content types, headers and bodies as documented, invalid input rejected, valid input
  accepted, authentication enforced where declared, unsupported methods refused, and a
  response-time limit.

How the app runs: uvicorn in a background thread serves the real app on a free local port,
its lifespan connected to a database cloned from the session's template and to a broker
namespace, both this module's own (seeded with some of everything, so small generated ids find
rows; mutating calls are fine). Schemathesis calls it over HTTP with the bootstrap (admin)
token. Why not Schemathesis' ASGI transport: it runs the app in an event-loop thread of its own
whose lifespan lives until the interpreter exits, and it raises the app's exceptions in the
test instead of returning the 500 a client gets; a real server gives exactly what a client
sees, and its start and stop belong to this module. The operations come from
`create_app(AdminSettings()).openapi()` at import (which touches no service); a test checks that
the server serves that same document. Generation is derandomized with a fixed seed.

Left out: Schemathesis' stateful workflows (links it infers between operations). Their
generation feeds on responses from a database the run keeps changing, which Hypothesis rejects
as flaky data generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import schemathesis
from admin_kit import TOKEN, Admin, own_world
from schemathesis.checks import not_a_server_error
from served import Server

from jobmanager.admin.app import create_app
from jobmanager.admin.config import AdminSettings
from jobmanager.jobs.spec import Condition, JobSpec, Trigger
from jobmanager.store import jobs as job_store

MAX_EXAMPLES = 25
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOCUMENT = create_app(AdminSettings()).openapi()

# The server checks some things a JSON schema cannot say, and refuses them with 422 even when
# the request fits the document: a cursor the list did not give out, a script no executor has,
# a template or regex that does not compile, an event that is not a valid event.
SEMANTIC_422 = [
    *(
        f"GET {path}"
        for path, operations in DOCUMENT["paths"].items()
        for method, operation in operations.items()
        if method == "get" and any(p["name"] == "cursor" for p in operation.get("parameters", []))
    ),
    "POST /api/v1/jobs",
    "PATCH /api/v1/jobs/{job_id}",
    "POST /api/v1/jobs/{job_id}/test",
]
# Schemathesis' default for valid requests, to which those operations add 422.
POSITIVE_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20240601,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "request-timeout": 10,
        "checks": {"max_response_time": 5.0},
        "operations": [
            {
                "include-name": name,
                "checks": {
                    "positive_data_acceptance": {"expected-statuses": [*POSITIVE_STATUSES, "422"]}
                },
            }
            for name in SEMANTIC_422
        ],
    }
)
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


async def seed(admin: Admin) -> None:
    """Some of everything: jobs, runs in every state and lane kind, events, keys, and an
    executor's report (the catalogue of known scripts)."""
    await admin.report_executor()
    trigger = Trigger(
        event_type="channel.*",
        conditions=[Condition(path="data.channel.channel_id", op="eq", value="ESPN-HD")],
    )
    async with admin.engine.begin() as conn:
        for i in range(3):
            await job_store.upsert(conn, JobSpec(name=f"job-{i}", trigger=trigger, script="noop"))
    for lane in ("a", "b", None):
        await admin.run_to_end(3, "done", lane=lane)
        await admin.run_to_end(2, "broken", lane=lane)
    first, *_ = await admin.runs("c", "d", "e", None)
    await admin.dispatch(first)
    for role in ("viewer", "operator", "admin"):
        await admin.key(role)


@pytest.fixture(scope="module")
async def server(amqp_url: str, postgres_url: str, template_database: str) -> AsyncIterator[str]:
    """The admin app served by uvicorn, with a database and a namespace of its own."""
    async with own_world(amqp_url, postgres_url, template_database, "fuzz") as (settings, engine):
        app = create_app(settings)
        async with Server(app) as served:
            async with httpx.AsyncClient(base_url=served.url, headers=AUTH) as client:
                async with asyncio.timeout(15):  # the broker connects in the background
                    while (await client.get("/readyz")).status_code != 200:
                        await asyncio.sleep(0.1)
                await seed(Admin(app, client, engine, settings))
            yield served.url


async def test_the_server_serves_the_document_under_test(server: str) -> None:
    async with httpx.AsyncClient(base_url=server) as client:
        response = await client.get("/openapi.json")  # public: no key
    assert response.status_code == 200
    assert response.json() == DOCUMENT


@schema.parametrize()
def test_no_request_gets_a_server_error(case: schemathesis.Case, server: str) -> None:
    case.call_and_validate(base_url=server, headers=AUTH, checks=[not_a_server_error])


@schema.parametrize()
def test_every_response_conforms_to_the_document(case: schemathesis.Case, server: str) -> None:
    case.call_and_validate(base_url=server, headers=AUTH)  # every check Schemathesis has

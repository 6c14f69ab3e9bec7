"""The admin API while its database or its broker is away (SPEC §7 `/readyz`; §9: 503 while
the database is down).

* Database down: the API answers 503 (problem details, `Retry-After`), `/readyz` 503,
  `/healthz` 200, and the API recovers by itself when the database is back. A database that
  stops answering (a partition, a frozen server) must give a 503 too, not a hanging request.
* Broker unreachable at start: the app starts, reads work, `/readyz` is 503, and every action
  that needs the broker answers 503 and changes nothing in the database; when the broker comes
  back, actions work without a restart. Broker lost while running: `/readyz` and the actions
  must notice.

The shared Postgres and RabbitMQ keep running: the app reaches them through a small TCP proxy
of this module, which a test cuts (the listener closes and every open connection is dropped,
so new connections are refused), stalls (connections stay open, nothing is forwarded) or
restores on the same port. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from admin_kit import Admin, admin_settings, running
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import JobSpec, Trigger
from jobmanager.store import jobs as job_store

API = "/api/v1"
PROBLEM = "application/problem+json"


class Proxy:
    """A TCP proxy from a local port to `target`, which can be cut, stalled and restored."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (on a free port the first time, on the same port after a cut)."""
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Close the listener and drop every open connection: the service is gone."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()  # a stalled pipe waits on nothing the abort would wake
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def stall(self) -> None:
        """Keep every connection open but forward nothing: the service hangs."""
        self._flowing.clear()

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, upstream_writer)),
            asyncio.create_task(self._pipe(upstream_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in (writer, upstream_writer):
                w.transport.abort()
                self._writers.discard(w)
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._tasks.difference_update(pipes)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()


@contextlib.asynccontextmanager
async def proxy_to(url: str) -> AsyncIterator[Proxy]:
    parts = urlsplit(url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 0)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


async def eventually(probe: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    """Poll `probe` until it holds; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within} s")
        await asyncio.sleep(0.1)


async def status(client: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> int:
    return (await client.request(method, url, **kwargs)).status_code


async def answers(client: httpx.AsyncClient, url: str, expected: int) -> bool:
    return await status(client, "GET", url) == expected


def assert_unavailable(response: httpx.Response, *, retry_after: bool = True) -> None:
    """A 503 as problem details, saying (by default) when to try again."""
    described = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    assert response.status_code == 503, f"{described}: {response.text[:300]}"
    assert response.headers["content-type"] == PROBLEM, described
    if retry_after:
        assert int(response.headers.get("retry-after", "0")) > 0, f"{described}: no Retry-After"
    body = response.json()
    assert body["status"] == 503 and body["detail"], body


# -- the database ---------------------------------------------------------------------------


async def test_while_the_database_is_down_the_api_answers_503_and_recovers_by_itself(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    async with proxy_to(database_url) as proxy:
        settings = admin_settings(amqp_url, proxy.url(database_url), topology)
        async with running(settings, engine) as admin:
            client = admin.client
            [request] = await admin.runs("ESPN-HD")
            key = await admin.key("viewer")
            await eventually(
                lambda: answers(client, "/readyz", 200), within=10, what="ready at the start"
            )
            assert await status(client, "GET", f"{API}/queue") == 200

            await proxy.cut()
            started = time.monotonic()
            for method, url, body in [
                ("GET", f"{API}/queue", None),
                ("GET", f"{API}/runs/{request.run_id}", None),
                ("GET", f"{API}/stats", None),
                ("PUT", f"{API}/settings/queue", {"interval_s": 3}),
                ("DELETE", f"{API}/queue/{request.run_id}", None),
            ]:
                assert_unavailable(await client.request(method, url, json=body))
            # A key is looked up in the database: its holder is told to retry, not refused.
            assert_unavailable(
                await client.get(f"{API}/queue", headers={"Authorization": f"Bearer {key}"})
            )
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and "database" in ready.json()["detail"]
            assert await status(client, "GET", "/healthz") == 200
            assert time.monotonic() - started < 10, "503s must come quickly, not after hanging"

            await proxy.start()
            await eventually(
                lambda: answers(client, f"{API}/queue", 200), within=10, what="the API recovered"
            )
            assert await status(client, "GET", "/readyz") == 200
            removed = await client.delete(f"{API}/queue/{request.run_id}")
            assert removed.status_code == 200 and removed.json()["state"] == "removed"


async def test_a_database_that_stops_answering_gives_503_not_a_hanging_request(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    """The connect timeout covers new connections only; a pooled connection whose peer
    went silent needs a statement (command) timeout."""
    async with proxy_to(database_url) as proxy:
        settings = admin_settings(amqp_url, proxy.url(database_url), topology)
        async with running(settings, engine) as admin:
            assert await status(admin.client, "GET", f"{API}/queue") == 200

            proxy.stall()  # a network partition, or a frozen server
            response = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(8):
                    response = await admin.client.get(f"{API}/queue")
            assert response is not None, "GET /api/v1/queue did not answer within 8 s"
            assert_unavailable(response)
            await proxy.cut()


# -- the broker -----------------------------------------------------------------------------


def closed_port() -> int:
    """A local port nobody listens on (taken from the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def snapshot(engine: AsyncEngine) -> dict[str, list[str]]:
    """Every row of every table, as text: to prove that nothing changed."""
    async with engine.connect() as conn:
        tables = (
            await conn.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            )
        ).all()
        return {
            table: list(
                (await conn.scalars(text(f'SELECT t::text FROM "{table}" t ORDER BY 1'))).all()  # noqa: S608
            )
            for table in tables
        }


@pytest.fixture
async def without_broker(
    database_url: str, namespace: str, engine: AsyncEngine
) -> AsyncIterator[Admin]:
    """The app started with its broker URL pointing at a closed port."""
    topology = Topology(namespace, events_exchange=f"{namespace}.cm-events")
    amqp_url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/"
    async with running(admin_settings(amqp_url, database_url, topology), engine) as admin:
        yield admin


async def test_without_the_broker_the_app_starts_and_serves_reads(without_broker: Admin) -> None:
    admin, client = without_broker, without_broker.client
    run_id = await admin.run_to_end(3, "done")
    for url in (
        f"{API}/queue",
        f"{API}/executed",
        f"{API}/runs/{run_id}",
        f"{API}/jobs",
        f"{API}/settings/queue",
        f"{API}/audit",
        "/metrics",
        "/healthz",
    ):
        response = await client.get(url)
        assert response.status_code == 200, f"GET {url} -> {response.status_code}"
    stats = await client.get(f"{API}/stats")
    assert stats.status_code == 200 and stats.json()["dead_letters"] is None
    ready = await client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.headers["content-type"] == PROBLEM
    assert "broker" in ready.json()["detail"]


async def _job_id(admin: Admin) -> int:
    spec = JobSpec(name="existing", trigger=Trigger(event_type="channel.*"), script="noop")
    async with admin.engine.begin() as conn:
        job_id, _ = await job_store.upsert(conn, spec)
    return job_id


Action = Callable[[Admin], Awaitable[tuple[str, str, Any]]]


async def execute_now(admin: Admin) -> tuple[str, str, Any]:
    [request] = await admin.runs("lane")
    return "POST", f"{API}/queue/{request.run_id}/execute-now", None


async def remove(admin: Admin) -> tuple[str, str, Any]:
    [request] = await admin.runs("lane")
    return "DELETE", f"{API}/queue/{request.run_id}", None


async def execute_failed(admin: Admin) -> tuple[str, str, Any]:
    return "POST", f"{API}/failed/{await admin.run_to_end(2, 'broken')}/execute", None


async def queue_interval(_: Admin) -> tuple[str, str, Any]:
    return "PUT", f"{API}/settings/queue", {"interval_s": 5}


async def create_job(admin: Admin) -> tuple[str, str, Any]:
    await admin.report_executor()
    spec = {"name": "new", "trigger": {"event_type": "channel.*"}, "script": "noop"}
    return "POST", f"{API}/jobs", spec


async def change_job(admin: Admin) -> tuple[str, str, Any]:
    return "PATCH", f"{API}/jobs/{await _job_id(admin)}", {"enabled": False}


async def delete_job(admin: Admin) -> tuple[str, str, Any]:
    return "DELETE", f"{API}/jobs/{await _job_id(admin)}", None


BROKER_ACTIONS: list[Action] = [
    execute_now,
    remove,
    execute_failed,
    queue_interval,
    create_job,
    change_job,
    delete_job,
]


@pytest.mark.parametrize("action", BROKER_ACTIONS, ids=lambda action: action.__name__)
async def test_without_the_broker_an_action_that_needs_it_is_503_and_changes_nothing(
    without_broker: Admin, action: Action
) -> None:
    method, url, body = await action(without_broker)
    before = await snapshot(without_broker.engine)

    response = await without_broker.client.request(method, url, json=body)

    assert_unavailable(response, retry_after=False)  # see test_a_broker_503_says_when_to_retry
    assert "broker" in response.json()["detail"]
    assert await snapshot(without_broker.engine) == before


async def test_when_the_broker_comes_back_actions_work_without_a_restart(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    async with proxy_to(amqp_url) as proxy:
        await proxy.cut()  # the broker is away when the app starts
        settings = admin_settings(proxy.url(amqp_url), database_url, topology)
        async with running(settings, engine) as admin:
            [request] = await admin.runs("lane")
            url = f"{API}/queue/{request.run_id}/execute-now"
            assert_unavailable(await admin.client.post(url), retry_after=False)

            await proxy.start()
            await eventually(
                lambda: answers(admin.client, "/readyz", 200), within=15, what="ready again"
            )
            response = await admin.client.post(url)
            assert response.status_code == 200, response.text
            assert response.json()["execute_now"] is True


async def test_a_broker_503_says_when_to_retry(without_broker: Admin) -> None:
    """Like the database's 503 (problems.py), the broker's says when to try again."""
    method, url, body = await execute_now(without_broker)
    assert_unavailable(await without_broker.client.request(method, url, json=body))


async def test_when_the_broker_goes_away_readyz_and_actions_say_503(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    """A lost connection (the robust connection reconnecting) is not a ready broker: the
    action must be refused before it commits, not wait out the publisher's retries."""
    async with proxy_to(amqp_url) as proxy:
        settings = admin_settings(proxy.url(amqp_url), database_url, topology)
        async with running(settings, engine) as admin:
            client = admin.client
            await eventually(lambda: answers(client, "/readyz", 200), within=10, what="ready")
            [request] = await admin.runs("lane")

            await proxy.cut()
            await eventually(lambda: answers(client, "/readyz", 503), within=5, what="not ready")
            before = await snapshot(engine)
            async with asyncio.timeout(10):
                response = await client.post(f"{API}/queue/{request.run_id}/execute-now")
            assert_unavailable(response, retry_after=False)
            assert await snapshot(engine) == before

            await proxy.start()
            await eventually(lambda: answers(client, "/readyz", 200), within=15, what="ready again")
            response = await client.post(f"{API}/queue/{request.run_id}/execute-now")
            assert response.status_code == 200, response.text

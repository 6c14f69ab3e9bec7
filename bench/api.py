"""Admin API: GET /queue and GET /executed with a million runs stored (quick: 100,000),
and GET /activity (the console's Overview: the last hour and the last day).

The runs are inserted with one `INSERT ... SELECT ... FROM generate_series` (most succeeded,
one in twenty failed, 1% still queued and a few running, finish times spread over 30 days),
then `VACUUM ANALYZE`. The admin service runs as a process, as in production (with its
background tasks: the metrics' table counts every 10 s, Auto Cleanup every minute). Each
request is timed by the client, from sending to the last byte of the body.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from bench.infra import Infra, MeasurementError, database, namespace, processes
from bench.stack import service_env
from bench.stats import percentile
from jobmanager.admin.queries import encode_cursor
from jobmanager.store.db import plain_url
from jobmanager.testkit.ports import free_port
from jobmanager.testkit.waiting import wait_for

ENDPOINTS = ("queue", "executed")  # the list endpoints (SPEC §10: p99 <= 50 ms)
ACTIVITY = "activity"  # the Overview's aggregates (p99 <= 100 ms)
DEPTH = 5  # pages followed through next_cursor after the first
CLIENTS = 4  # concurrent clients in the concurrent part

INSERT_RUNS = """
INSERT INTO runs (job_id, job_name, script, command, lane, event_id, state, attempt,
                  max_attempts, token, enqueued_at, not_before, dispatched_at, started_at,
                  finished_at, result, feedback, executor, output_tail)
SELECT j, 'job-' || j, 'noop',
       '{{"channel_id": "CH-' || (g % 5000) || '", "name": "Channel ' || (g % 5000)
         || '", "origin": "avcm", "pod_service": "pod-' || (g % 17)
         || '", "compression_element": "enc-' || (g % 31) || '", "valid": true}}',
       'CH-' || (g % 5000), md5(g::text), st, 1, 1, 1, t, t,
       CASE WHEN st <> 'queued' THEN t + interval '4 ms' END,
       CASE WHEN st <> 'queued' THEN t + interval '9 ms' END,
       CASE WHEN st IN ('succeeded', 'failed') THEN t + interval '70 ms' END,
       CASE st WHEN 'succeeded' THEN 3 WHEN 'failed' THEN 2 END,
       CASE WHEN st = 'failed'
            THEN 'IPX rejected the change: pod_service pod-' || (g % 17) || ' is unknown'
            ELSE '' END,
       CASE WHEN st <> 'queued' THEN 'executor-' || (g % 4) END,
       ''
FROM (
    SELECT g, 1 + g % 20 AS j,
           now() - interval '30 days' + g * (interval '30 days' / {total}) AS t,
           CASE WHEN g > {total} - {queued} THEN 'queued'
                WHEN g > {total} - {queued} - 4 THEN 'running'
                WHEN g % 20 = 7 THEN 'failed'
                ELSE 'succeeded' END AS st
    FROM generate_series(1, {total}) AS g
) AS s
"""

INSERT_JOBS = """
INSERT INTO jobs (name, event_type, script, command_template, lane)
SELECT 'job-' || g, 'channel.updated', 'noop', '{{ data.channel | tojson }}',
       '{{ data.channel.channel_id }}'
FROM generate_series(1, 20) AS g
"""


@dataclass(frozen=True)
class EndpointTimes:
    sequential_ms: list[float]
    concurrent_ms: list[float]

    @property
    def p99_ms(self) -> float:
        """One client, one request at a time: the service's own response time."""
        return percentile(self.sequential_ms, 99)

    @property
    def concurrent_p99_ms(self) -> float:
        return percentile(self.concurrent_ms, 99)


@dataclass(frozen=True)
class Api:
    runs: int
    insert_s: float
    endpoints: dict[str, EndpointTimes]

    @property
    def p99_ms(self) -> float:
        """The worse endpoint's p99, requests one at a time."""
        return max(self.endpoints[e].p99_ms for e in ENDPOINTS)

    @property
    def concurrent_p99_ms(self) -> float:
        """The worse endpoint's p99 with CLIENTS clients at once."""
        return max(self.endpoints[e].concurrent_p99_ms for e in ENDPOINTS)

    def note(self, endpoint: str) -> str:
        t = self.endpoints[endpoint]
        count = len(t.sequential_ms) + len(t.concurrent_ms)
        return (
            f"{count:,} requests: sequential p50 {percentile(t.sequential_ms, 50):.1f} "
            f"p99 {percentile(t.sequential_ms, 99):.1f} ms, {CLIENTS} concurrent clients p50 "
            f"{percentile(t.concurrent_ms, 50):.1f} p99 {percentile(t.concurrent_ms, 99):.1f} ms"
        )


async def _fill(url: str, total: int) -> tuple[float, dict[str, str]]:
    """Insert the runs; (seconds it took, a mid-table cursor per endpoint)."""
    conn = await asyncpg.connect(plain_url(url))
    try:
        start = time.perf_counter()
        await conn.execute(INSERT_JOBS)
        await conn.execute(INSERT_RUNS.format(total=total, queued=max(total // 100, 1)))
        await conn.execute("VACUUM ANALYZE runs")
        elapsed = time.perf_counter() - start
        executed = await conn.fetchrow(
            "SELECT finished_at, id FROM runs WHERE state = 'succeeded' "
            "ORDER BY finished_at DESC, id DESC OFFSET $1 LIMIT 1",
            total // 2,
        )
        queued = await conn.fetchval(
            "SELECT id FROM runs WHERE state IN ('queued', 'dispatched', 'running') "
            "ORDER BY id DESC OFFSET $1 LIMIT 1",
            total // 200,
        )
    finally:
        await conn.close()
    if executed is None or queued is None:
        raise MeasurementError("the inserted runs are not there")
    middle = {
        "executed": encode_cursor([executed["finished_at"], executed["id"]]),
        "queue": encode_cursor([queued]),
        ACTIVITY: "",
    }
    return elapsed, middle


async def _walk(client: httpx.AsyncClient, endpoint: str, middle: str, out: list[float]) -> None:
    """The first page, DEPTH pages after it through next_cursor, and one page from the
    middle of the table; each request's time appended to `out` (ms). For the Overview:
    the last hour and the last day."""

    async def get(params: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        response = await client.get(f"/api/v1/{endpoint}", params=params)
        out.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise MeasurementError(f"GET /{endpoint}: {response.status_code} {response.text}")
        page: dict[str, Any] = response.json()
        return page

    if endpoint == ACTIVITY:
        await get({"window": "hour"})
        await get({"window": "day"})
        return
    page = await get({})
    for _ in range(DEPTH):
        if page["next_cursor"] is None:
            break
        page = await get({"cursor": page["next_cursor"]})
    await get({"cursor": middle})


async def measure(infra: Infra, *, runs: int, sequential: int, concurrent: int) -> Api:
    token = secrets.token_hex(24)
    port = free_port()
    async with database(infra) as url, namespace(infra) as topology, processes(infra) as group:
        insert_s, middle = await _fill(url, runs)
        group.start(
            "admin",
            ["-m", "jobmanager.admin"],
            {
                **service_env(infra, topology, url),
                "JOBMANAGER_ADMIN_TOKEN": token,
                "JOBMANAGER_ADMIN_PORT": str(port),
            },
        )
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ) as client:

            async def ready() -> bool | None:
                try:
                    return True if (await client.get("/readyz")).status_code == 200 else None
                except httpx.TransportError:
                    return None

            await wait_for(ready, timeout=60, what="the admin service", alive=group.check_alive)
            times: dict[str, EndpointTimes] = {}
            for endpoint in (*ENDPOINTS, ACTIVITY):
                for _ in range(5):  # warm-up: the connection pool, the caches, the pages
                    await _walk(client, endpoint, middle[endpoint], [])
                seq: list[float] = []
                for _ in range(sequential):
                    await _walk(client, endpoint, middle[endpoint], seq)
                conc: list[float] = []

                async def one_client(endpoint: str = endpoint, out: list[float] = conc) -> None:
                    for _ in range(concurrent):
                        await _walk(client, endpoint, middle[endpoint], out)

                await asyncio.gather(*(one_client() for _ in range(CLIENTS)))
                times[endpoint] = EndpointTimes(seq, conc)
    return Api(runs, insert_s, times)

"""The admin service with its background work and with running matchers.

* Auto Cleanup runs periodically in the admin service and applies the stored settings.
* Job and settings changes reach every running matcher within a second (control broadcast).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from admin_kit import Admin, admin_settings, running
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.topology import Topology
from jobmanager.store.models import Run
from jobmanager.testkit.processes import processes
from jobmanager.testkit.stack import MATCHER
from jobmanager.testkit.waiting import wait_for

API = "/api/v1"


async def test_auto_cleanup_runs_periodically_with_the_stored_settings(
    amqp_url: str, database_url: str, topology: Topology, engine: AsyncEngine
) -> None:
    settings = admin_settings(amqp_url, database_url, topology, cleanup_interval_s=0.2)
    async with running(settings, engine) as admin:
        client = admin.client
        kept = [await admin.run_to_end(3) for _ in range(5)]
        failed = await admin.run_to_end(2)
        body = {
            "enabled": True,
            "method": "row_count",
            "max_rows": 2,
            "max_age_s": 0,
            "cleanup_amount": 2,
        }
        assert (await client.put(f"{API}/executed/cleanup", json=body)).status_code == 200

        async def executed_ids() -> list[int]:
            async with engine.connect() as conn:
                return list(
                    (
                        await conn.scalars(
                            select(Run.id).where(Run.state == "succeeded").order_by(Run.id)
                        )
                    ).all()
                )

        deadline = time.monotonic() + 10
        while len(await executed_ids()) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        # 5 rows, limit 2, 2 per pass: 5 → 3 → 1; the newest row stays.
        assert await executed_ids() == kept[-1:]
        async with engine.connect() as conn:
            assert await conn.scalar(select(func.count()).where(Run.id == failed)) == 1, (
                "Failed untouched"
            )


@pytest.fixture
async def matchers(
    amqp_url: str, database_url: str, topology: Topology, tmp_path: Path
) -> AsyncIterator[list[Path]]:
    """Two matchers consuming; their logs."""
    env = {
        "JOBMANAGER_AMQP_URL": amqp_url,
        "JOBMANAGER_DATABASE_URL": database_url,
        "JOBMANAGER_NAMESPACE": topology.namespace,
        "JOBMANAGER_EVENTS_EXCHANGE": topology.events_exchange,
        # Only the broadcast may explain a reload within the test's time.
        "JOBMANAGER_CATALOGUE_REFRESH_S": "3600",
    }
    async with processes(tmp_path, env) as group:
        started = [group.start(f"matcher-{n}", ["-m", MATCHER]) for n in (1, 2)]

        async def consuming() -> bool | None:
            return True if all("consuming" in p.text() for p in started) else None

        await wait_for(consuming, 30, what="the matchers", alive=group.check_alive)
        yield [p.log for p in started]


async def _reloads(logs: list[Path], pattern: str, timeout: float) -> float:
    """Seconds until every matcher's log shows a reload matching `pattern`."""
    start = time.monotonic()
    while not all(re.search(pattern, log.read_text()) for log in logs):
        assert time.monotonic() - start < timeout, [log.read_text()[-500:] for log in logs]
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_changes_reach_every_running_matcher_within_a_second(
    admin: Admin, matchers: list[Path]
) -> None:
    await admin.report_executor(["noop"])
    job = {"name": "broadcast", "trigger": {"event_type": "x.y"}, "script": "noop"}
    assert (await admin.client.post(f"{API}/jobs", json=job)).status_code == 201
    assert await _reloads(matchers, r"catalogue loaded: 1 enabled job", 1.0) < 1.0
    put = await admin.client.put(f"{API}/settings/queue", json={"interval_s": 7.5})
    assert put.status_code == 200
    assert await _reloads(matchers, r"interval 7\.500 s", 1.0) < 1.0

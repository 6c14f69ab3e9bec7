"""The screenshots of the console in `docs/` (shown in the README), taken with realistic
data: the sample jobs of `examples/demo.yaml` and a burst of simulated Channel Manager
events. Not part of the suite; refresh them with

    JOBMANAGER_CONSOLE_SCREENSHOTS=docs .venv/bin/pytest tests/console/test_screenshots.py
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
from pathlib import Path

import pytest
import yaml
from console.conftest import API, Console, sign_in
from playwright.async_api import Page, expect

from jobmanager.cli.events import ChannelManagerSimulator

ROOT = Path(__file__).resolve().parents[2]
TARGET = os.environ.get("JOBMANAGER_CONSOLE_SCREENSHOTS", "")
pytestmark = pytest.mark.skipif(
    not TARGET, reason="set JOBMANAGER_CONSOLE_SCREENSHOTS=docs to refresh the screenshots"
)


async def shoot(page: Page, name: str) -> None:
    await asyncio.sleep(2.5)  # a refresh of the page, so that the countdowns are current
    await page.screenshot(path=str(ROOT / TARGET / f"console-{name}.png"))


async def test_screenshots_of_the_pages(console: Console, page: Page) -> None:
    sample = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text(encoding="utf-8"))
    for job in sample["jobs"]:
        assert (await console.api.post(f"{API}/jobs", json=job)).status_code == 201
    for table in ("executed", "failed"):
        body = sample["settings"][f"{table}_cleanup"]
        assert (await console.api.put(f"{API}/{table}/cleanup", json=body)).status_code == 200
    await console.set_interval(4)

    created = await console.api.post(f"{API}/keys", json={"name": "ops-anna", "role": "admin"})
    await sign_in(page, console, created.json()["key"], "/queue")
    await page.set_viewport_size({"width": 1440, "height": 860})

    events = ChannelManagerSimulator(channels=8, seed=11).events()
    stack = console.stack
    for event in itertools.islice(events, 24):
        await stack.publisher.publish(
            stack.topology.events_exchange, event.event_type, event, message_id=event.event_id
        )
    await expect(page.locator("td.starts time").first).to_be_visible()
    await expect(page.locator("[data-count=queue]")).not_to_have_text("0")

    async def retrying() -> bool:
        items = (await console.api.get(f"{API}/queue")).json()["items"]
        return any(run["attempt"] > 1 for run in items)

    with contextlib.suppress(AssertionError):  # a retry makes a better picture; not a must
        await console.until(retrying, 10)
    await shoot(page, "queue")

    async def drained() -> bool:
        return not (await console.api.get(f"{API}/queue")).json()["items"]

    await console.until(drained, 120)
    for name in ("executed", "failed", "jobs"):
        await page.get_by_role("link", name=re.compile(f"^{name}", re.IGNORECASE)).click()
        await expect(page.locator("tbody tr[data-key]").first).to_be_visible()
        await shoot(page, name)

    await page.get_by_role("link", name=re.compile("^Overview")).click()
    await expect(page.locator("[data-chart] canvas")).to_be_visible()
    await shoot(page, "overview")

    await page.get_by_role("link", name=re.compile("^Failed Jobs")).click()
    await page.locator("tbody tr[data-key] a").first.click()
    await expect(page.locator("[data-attempts] tr").first).to_be_visible()
    await shoot(page, "run")
    assert Path(ROOT / TARGET / "console-queue.png").exists()

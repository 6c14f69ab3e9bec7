"""The console in a real browser: Debian's Chromium driven by Playwright, against the admin
service served by uvicorn on a free port, with a real matcher and executor (see `stack.py`),
so that published events really become runs the pages show.

The stack and the browser are shared by the module; each test has its own browser context
(its own sessionStorage, so its own sign-in) and keeps out of the others' way with jobs and
event types of its own. Chromium comes from the `chromium` Debian package (`.ci/run`
installs it); Playwright never downloads a browser. Without it the tests are skipped on a
laptop and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from stack import Stack, running_stack

from jobmanager.core.messages import Event
from jobmanager.testkit.ports import free_port
from jobmanager.testkit.waiting import wait_for

CHROMIUM = Path(os.environ.get("JOBMANAGER_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "console-test-bootstrap-token-0123456789"
API = "/api/v1"

# The pages refresh every 2 s; a run takes a few seconds through matcher and executor.
expect.set_options(timeout=20_000)


@dataclass
class Console:
    """The running console: its URL, an admin client of its API, and the stack behind it."""

    url: str
    api: httpx.AsyncClient
    stack: Stack

    async def key(self, role: str) -> str:
        created = await self.api.post(
            f"{API}/keys", json={"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role}
        )
        created.raise_for_status()
        return str(created.json()["key"])

    async def job(self, **fields: Any) -> dict[str, Any]:
        """A job of this test's own (unique name and event type), created through the API."""
        fields.setdefault("name", f"job-{uuid.uuid4().hex[:8]}")
        fields.setdefault("trigger", {"event_type": f"test.{uuid.uuid4().hex[:8]}"})
        fields.setdefault("script", "noop")
        before = self.stack.log("matcher").count("catalogue loaded")
        created = await self.api.post(f"{API}/jobs", json=fields)
        assert created.status_code == 201, created.text
        await self.reloaded(before)
        return dict(created.json())

    async def reloaded(self, before: int) -> None:
        """Wait until the matcher has reloaded its catalogue and settings after a change."""
        await self.stack.reloaded(before)

    async def set_interval(self, seconds: float) -> None:
        before = self.stack.log("matcher").count("catalogue loaded")
        response = await self.api.put(f"{API}/settings/queue", json={"interval_s": seconds})
        assert response.status_code == 200, response.text
        await self.reloaded(before)

    async def publish(self, job: dict[str, Any], data: dict[str, Any] | None = None) -> str:
        event_id = uuid.uuid4().hex
        event = Event(event_id=event_id, event_type=job["trigger"]["event_type"], data=data or {})
        stack = self.stack
        await stack.publisher.publish(
            stack.topology.events_exchange, event.event_type, event, message_id=event_id
        )
        return event_id

    async def runs(self, table: str, job: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self.api.get(f"{API}/{table}", params={"job": job["name"]})
        response.raise_for_status()
        return list(response.json()["items"])

    async def until(self, probe: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
        """Wait until `probe` returns something truthy; returns it."""

        async def attempt() -> Any:
            value = await probe()
            return value or None

        return await wait_for(attempt, timeout)


@pytest.fixture(scope="module")
async def console(
    amqp_url: str,
    postgres_url: str,
    template_database: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Console]:
    port = free_port()
    async with running_stack(
        amqp_url,
        postgres_url,
        template_database,
        tmp_path_factory.mktemp("console"),
        executors=1,
        concurrency=4,
    ) as stack:
        stack.start(
            "admin",
            "jobmanager.admin",
            env={
                "JOBMANAGER_ADMIN_PORT": str(port),
                "JOBMANAGER_ADMIN_TOKEN": TOKEN,
                "JOBMANAGER_LOG_LEVEL": "INFO",
            },
        )
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        ) as client:

            async def ready() -> bool | None:
                try:
                    return True if (await client.get("/readyz")).status_code == 200 else None
                except httpx.TransportError:
                    return None

            await wait_for(ready, 30)
            # Jobs are checked against the scripts executors report: wait for that report.
            await wait_for(lambda: _scripts_known(client), 30)
            yield Console(url, client, stack)


async def _scripts_known(client: httpx.AsyncClient) -> bool | None:
    scripts = (await client.get(f"{API}/scripts")).json()
    return True if any(s["name"] == "noop" for s in scripts) else None


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh tab of its own; a JavaScript error on any page fails the test."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    tab = await context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield tab
    finally:
        await context.close()
    assert not errors, f"JavaScript errors: {errors}"


async def sign_in(page: Page, console: Console, key: str, path: str = "/queue") -> None:
    """Sign in through the sign-in form, arriving at `path`."""
    await page.goto(console.url + path)
    await expect(page).to_have_url(re.compile(r"/sign-in\?next="))
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(re.escape(path.split("?")[0])))
    await expect(page.locator("[data-who]")).not_to_be_empty()


async def settle() -> None:
    """Let one refresh of the page pass (they come every 2 s)."""
    await asyncio.sleep(2.5)

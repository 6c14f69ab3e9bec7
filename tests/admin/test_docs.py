"""`/docs` is served by the admin itself (docs/SECURITY.md): Swagger UI's files come from a
pinned package, not a CDN, under the console's Content-Security-Policy; in a real browser
(Debian's Chromium, as the console's tests use) the page renders the API with no request to
another origin and no policy violation."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from admin_kit import Admin, admin_settings
from playwright.async_api import async_playwright
from served import Server

from jobmanager.admin.app import create_app
from jobmanager.admin.console.pages import SECURITY_HEADERS
from jobmanager.core.topology import Topology

CHROMIUM = Path(os.environ.get("JOBMANAGER_TEST_CHROMIUM", "/usr/bin/chromium"))
CSP = SECURITY_HEADERS["Content-Security-Policy"]


async def test_the_docs_page_and_its_files_come_from_the_admin(admin: Admin) -> None:
    page = await admin.client.get("/docs")
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == CSP
    assert "://" not in page.text, "the page loads something from another origin"
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(sources) == 4, sources  # stylesheet, icon, the bundle and its start script
    media = {}
    for source in sources:
        asset = await admin.client.get(source)
        assert asset.status_code == 200, source
        assert asset.headers["content-security-policy"] == CSP
        media[source.rsplit("/", 1)[1]] = asset.headers["content-type"]
        again = await admin.client.get(source, headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304
    assert media["swagger-ui-bundle.js"].startswith("text/javascript")
    assert media["swagger-ui.css"].startswith("text/css")
    assert (await admin.client.get("/docs/assets/index.html")).status_code == 404
    assert (await admin.client.get("/docs/assets/..%2fpyproject.toml")).status_code == 404


async def test_the_docs_render_in_a_browser_under_the_policy(
    amqp_url: str, database_url: str, topology: Topology
) -> None:
    if not CHROMIUM.exists():
        message = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; CI=true requires it", pytrace=False)
        pytest.skip(message)
    settings = admin_settings(amqp_url, database_url, topology)
    async with Server(create_app(settings)) as server, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = await browser.new_page()
            complaints: list[str] = []
            elsewhere: list[str] = []
            page.on(
                "console",
                lambda m: complaints.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: complaints.append(str(e)))
            page.on(
                "request",
                lambda r: None if r.url.startswith(server.url) else elsewhere.append(r.url),
            )
            await page.goto(f"{server.url}/docs")
            title = page.locator(".swagger-ui .info .title")
            await title.wait_for(timeout=20_000)
            assert "Job Manager" in await title.inner_text()
            # The operations are there, with the role each needs (an OpenAPI extension).
            await page.locator(".opblock").first.wait_for(timeout=10_000)
            assert await page.locator(".opblock").count() >= 20
        finally:
            await browser.close()
    assert not elsewhere, f"requests to other origins: {elsewhere}"
    assert not [c for c in complaints if "Content Security Policy" in c], complaints

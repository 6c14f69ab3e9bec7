"""The console's pages and files as HTTP resources (no browser, no services): public by
declaration, served with their security headers, and complete (every module a page or
another module imports exists)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi.routing import APIRoute

from jobmanager.admin.app import create_app
from jobmanager.admin.config import AdminSettings
from jobmanager.admin.console import pages

PAGES = [
    "/sign-in",
    "/overview",
    "/jobs",
    "/queue",
    "/executed",
    "/failed",
    "/runs/42",
    "/events",
    "/audit",
    "/executors",
    "/keys",
]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The pages touch neither the database nor the broker: no lifespan is needed.
    transport = httpx.ASGITransport(app=create_app(AdminSettings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
        yield http


def test_every_console_route_is_public_by_declaration() -> None:
    routes = [r for r in pages.router.routes if isinstance(r, APIRoute)]
    assert routes
    for route in routes:
        assert (route.openapi_extra or {}).get("x-required-role") == "public", route.path
        assert route.include_in_schema is False, f"{route.path} is not part of the API"


async def test_the_console_opens_on_the_overview(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/overview"


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_holds_no_data_and_only_our_scripts_run(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)  # no key: the pages are public
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r'<script type="module" src="/static/(js/[\w-]+\.js)"', response.text)
    assert len(scripts) == 1 and scripts[0] in pages._assets()
    assert "<script>" not in response.text and " style=" not in response.text


async def test_a_run_page_needs_a_run_id_in_range(client: httpx.AsyncClient) -> None:
    assert (await client.get("/runs/0")).status_code == 422
    assert (await client.get("/runs/not-a-number")).status_code == 422


async def test_static_files_revalidate_with_an_etag(client: httpx.AsyncClient) -> None:
    first = await client.get("/static/js/api.js")
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/javascript; charset=utf-8"
    assert first.headers["cache-control"] == "no-cache"
    again = await client.get("/static/js/api.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.mark.parametrize(
    "path", ["/static/nope.js", "/static/../pages.py", "/static/%2e%2e/pages.py", "/static/"]
)
async def test_only_the_console_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 404


def test_every_imported_module_exists() -> None:
    assets = pages._assets()
    for name, asset in assets.items():
        if not name.endswith(".js"):
            continue
        for imported in re.findall(r'from "\./([\w-]+\.js)"', asset.body.decode()):
            assert f"js/{imported}" in assets, f"{name} imports the missing {imported}"
    for template in (pages.HERE / "templates").glob("*.html"):
        for used in re.findall(r"/static/([\w/.-]+)", template.read_text()):
            assert used in assets or used == "js/", f"{template.name} uses the missing {used}"

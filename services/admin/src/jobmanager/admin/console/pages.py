"""The console's routes: its pages and its static files, all public (they hold no data).

They stay out of the OpenAPI document, as `/docs` does: they are not part of the API. Each
still declares its role, so that no route of the app is without one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.routes.common import RunId

HERE = Path(__file__).parent
STATIC = HERE / "static"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The key lives in sessionStorage, so script injection is the threat that matters: only our
# own files may run or style the page, and nobody may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# (page, label, address, the role its link needs: None for every role). A link a role may
# not use is hidden by the browser, as are the buttons it may not use (shell.applyRole).
TABS = [
    ("overview", "Overview", "/overview", None),
    ("jobs", "Jobs", "/jobs", None),
    ("queue", "Queue", "/queue", None),
    ("executed", "Executed Jobs", "/executed", None),
    ("failed", "Failed Jobs", "/failed", None),
    ("events", "Events", "/events", None),
    ("audit", "Audit", "/audit", None),
    ("executors", "Executors", "/executors", None),
    ("keys", "API keys", "/keys", "admin"),
]

router = auth_router(include_in_schema=False)
Public = Annotated[Principal, requires("public")]


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def _assets() -> dict[str, Asset]:
    """Every file under static/, read once: the allow-list of what `/static/` serves."""
    found: dict[str, Asset] = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file() and path.suffix in MEDIA_TYPES:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            found[path.relative_to(STATIC).as_posix()] = Asset(body, MEDIA_TYPES[path.suffix], etag)
    return found


@cache
def _templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _page(template: str, page: str, title: str, **context: Any) -> HTMLResponse:
    html = _templates().get_template(template).render(page=page, title=title, tabs=TABS, **context)
    return HTMLResponse(html, headers=SECURITY_HEADERS)


@router.get("/")
async def home(_: Public) -> RedirectResponse:
    """The console opens on the Overview: the whole system at a glance."""
    return RedirectResponse("/overview", status_code=303)


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in(_: Public) -> HTMLResponse:
    return _page("sign_in.html", "sign-in", "Sign in")


@router.get("/overview", response_class=HTMLResponse)
async def overview(_: Public) -> HTMLResponse:
    return _page("overview.html", "overview", "Overview")


@router.get("/jobs", response_class=HTMLResponse)
async def jobs(_: Public) -> HTMLResponse:
    return _page("jobs.html", "jobs", "Jobs")


@router.get("/queue", response_class=HTMLResponse)
async def queue(_: Public) -> HTMLResponse:
    return _page("queue.html", "queue", "Queue")


@router.get("/executed", response_class=HTMLResponse)
async def executed(_: Public) -> HTMLResponse:
    return _page("finished.html", "executed", "Executed Jobs", kind="executed")


@router.get("/failed", response_class=HTMLResponse)
async def failed(_: Public) -> HTMLResponse:
    return _page("finished.html", "failed", "Failed Jobs", kind="failed")


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run(run_id: RunId, _: Public) -> HTMLResponse:
    return _page("run.html", "run", f"Run {run_id}", run_id=run_id)


@router.get("/events", response_class=HTMLResponse)
async def events(_: Public) -> HTMLResponse:
    return _page("events.html", "events", "Events")


@router.get("/audit", response_class=HTMLResponse)
async def audit(_: Public) -> HTMLResponse:
    return _page("audit.html", "audit", "Audit log")


@router.get("/executors", response_class=HTMLResponse)
async def executors(_: Public) -> HTMLResponse:
    return _page("executors.html", "executors", "Executors")


@router.get("/keys", response_class=HTMLResponse)
async def keys(_: Public) -> HTMLResponse:
    """Public like every page (it holds no data): the keys themselves come from the API,
    which refuses any role below admin; the page then says it is for admins only."""
    return _page("keys.html", "keys", "API keys")


@router.get("/static/{name:path}")
async def static(name: str, request: Request, _: Public) -> Response:
    """A file of the console, revalidated on every load (ETag), so a new release is seen
    at once while unchanged files cost a 304."""
    asset = _assets().get(name)
    if asset is None:
        return Response("not found", status_code=404, media_type="text/plain")
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)

"""The API's documentation at `/docs`: Swagger UI, served by the admin itself.

Its files come from the `fastapi-offline` package (Swagger UI 5.32 in 1.7.7), at the version
pinned in `uv.lock`, not from a CDN: the page works without internet access, cannot change
under us between two loads, and runs under the console's Content-Security-Policy (only this
origin's scripts and styles). Only the package's files are used, not its app class.
That policy runs no inline script, so the few lines that start the UI are a file of their own
(`START`). Public, like the OpenAPI document it shows.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files
from typing import Annotated

from fastapi import Request, Response
from fastapi.responses import HTMLResponse

from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.console.pages import SECURITY_HEADERS, Asset
from jobmanager.admin.problems import problem

ASSETS = "/docs/assets"
# The files of the package that the page uses: the allow-list of what `ASSETS` serves.
VENDORED = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}
# No validator badge: it would load an image from swagger.io, which the policy refuses.
START = b"""window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    showExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
"""
PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Job Manager API</title>
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
<link rel="icon" type="image/png" href="{ASSETS}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{ASSETS}/start.js"></script>
</body>
</html>
"""

router = auth_router(include_in_schema=False)
Public = Annotated[Principal, requires("public")]


def _asset(body: bytes, media_type: str) -> Asset:
    return Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


@cache
def _assets() -> dict[str, Asset]:
    """The files, read once."""
    static = files("fastapi_offline") / "static"
    found = {name: _asset((static / name).read_bytes(), t) for name, t in VENDORED.items()}
    found["start.js"] = _asset(START, "text/javascript; charset=utf-8")
    return found


@router.get("/docs", response_class=HTMLResponse)
async def docs(_: Public) -> HTMLResponse:
    return HTMLResponse(PAGE, headers=SECURITY_HEADERS)


@router.get(ASSETS + "/{name}")
async def asset(name: str, request: Request, _: Public) -> Response:
    """A file of the documentation page, revalidated by its ETag."""
    found = _assets().get(name)
    if found is None:
        return problem(404, f"no such file of the documentation page: {name!r}")
    headers = {**SECURITY_HEADERS, "ETag": found.etag}
    if request.headers.get("if-none-match") == found.etag:
        return Response(status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)

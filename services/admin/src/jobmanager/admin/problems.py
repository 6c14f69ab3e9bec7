"""Errors as JSON problem details (RFC 9457): a status, a title and a clear detail.

Invalid input is 422 with the field errors; a database that does not answer is 503; nothing
a client sends may produce a 500 (an unexpected error is logged and answered 500 as a bug).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobmanager.core.runtime import Unavailable
from jobmanager.store.db import transient
from jobmanager.store.ledger import Conflict, RunNotFound

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=MEDIA_TYPE)


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid"}
        where = ".".join(str(p) for p in first["loc"])
        return problem(
            422, f"{where}: {first['msg']}" if where else str(first["msg"]), errors=errors
        )

    @app.exception_handler(RunNotFound)
    async def not_found(_: Request, exc: RunNotFound) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, Unavailable) or transient(exc):
            log.warning("database or broker unavailable: %s", exc.__class__.__name__)
            response = problem(503, "the database or the broker is unavailable; try again")
            response.headers["Retry-After"] = "5"
            return response
        log.exception("unexpected error")
        return problem(500, "unexpected error; it has been logged")

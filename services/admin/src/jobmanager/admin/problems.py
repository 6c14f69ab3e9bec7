"""Errors as JSON problem details (RFC 9457): a status, a title and a clear detail.

Invalid input is 422 with the field errors, each with pydantic's `loc`, `msg` and `type` and
its `message` in an operator's words (`jobmanager.jobs.wording`), and a detail that says them
all; a database that does not answer is 503; nothing
a client sends may produce a 500 (an unexpected error is logged and answered 500 as a bug).
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobmanager.core.runtime import Unavailable
from jobmanager.jobs.wording import describe
from jobmanager.store.db import transient
from jobmanager.store.ledger import Conflict, RunNotFound

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"


class ResourceConflict(Exception):
    """A request the current state of a resource refuses (409), such as a name taken."""


class InvalidBody(StarletteHTTPException):
    """Invalid input found while the body is read or parsed, where FastAPI lets only HTTP
    exceptions through: a 422 (or 413) whose `errors` have the shape of every 422's."""

    def __init__(
        self, loc: tuple[str | int, ...], msg: str, kind: str = "json_invalid", status: int = 422
    ) -> None:
        where = ".".join(str(part) for part in loc)
        super().__init__(status, f"{where}: {msg}" if where else msg)
        self.errors = [{"loc": list(loc), "msg": msg, "type": kind}]


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=MEDIA_TYPE)


def invalid(loc: tuple[str | int, ...], msg: str, value: Any = None) -> RequestValidationError:
    """A 422 for one field that only the route can judge (an unknown script, say), in the
    same shape as every other validation error: a detail and an `errors` list."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])


def invalid_model(
    loc: tuple[str | int, ...], exc: ValidationError, model: type[BaseModel] | None = None
) -> RequestValidationError:
    """A 422 from `model` validated inside a route, its fields placed under `loc`; worded
    for that model when it is the body itself (`loc` is `("body",)`), not the route's."""
    placed = [{**error, "loc": (*loc, *error["loc"])} for error in exc.errors()]
    within = model if tuple(loc) == ("body",) else None
    return RequestValidationError([{**e, "message": describe(e, within)} for e in placed])


def _body_model(request: Request) -> type[BaseModel] | None:
    """The model of the route's body, which the errors under `body` are about."""
    field = getattr(request.scope.get("route"), "body_field", None)
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def summary(messages: list[str]) -> str:
    """The detail of a 422: its one problem, or all of them."""
    if len(messages) == 1:
        return messages[0]
    return f"{len(messages)} problems: " + "; ".join(messages)


def _message(error: Any) -> str:
    """An error's message; FastAPI's "JSON decode error" with the decoder's reason."""
    message = str(error.get("msg", ""))
    reason = (error.get("ctx") or {}).get("error")
    return f"{message}: {reason}" if error.get("type") == "json_invalid" and reason else message


def _allowed(app: FastAPI, path: str) -> list[str]:
    """The methods the API documents for a path (a literal path wins over a template that
    would also match it, as `/executed/cleanup` over `/executed/{run_id}`)."""
    paths = app.openapi().get("paths", {})
    if path in paths:
        return sorted(m.upper() for m in paths[path])
    methods: set[str] = set()
    for template, operations in paths.items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def document(app: FastAPI) -> None:
    """Serve error schemas under `application/problem+json`, the media type they have.

    FastAPI files every response model under the route's own media type (application/json);
    this moves the schema of each documented problem response to where it belongs.
    """
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for response in operation.get("responses", {}).values():
                        content = response.get("content", {})
                        if MEDIA_TYPE in content and "application/json" in content:
                            content[MEDIA_TYPE] = content.pop("application/json")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status, detail = exc.status_code, str(exc.detail)
        if status == 400:
            # FastAPI's answer to a body it cannot parse: invalid input, as everywhere else.
            status, detail = 422, f"body: {detail.lower()} (it must be JSON)"
        extra = {"errors": exc.errors} if isinstance(exc, InvalidBody) else {}
        response = problem(status, detail, **extra)
        response.headers.update(exc.headers or {})
        if status == 405:
            # Starlette names only the first route whose path matched; list them all.
            response.headers["Allow"] = ", ".join(_allowed(app, request.url.path))
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        model = _body_model(request)
        errors, messages = [], []
        for e in exc.errors():
            loc, msg = list(e.get("loc", ())), _message(e)
            worded = {**e, "msg": msg}
            message = str(
                e.get("message") or describe(worded, model if loc[:1] == ["body"] else None)
            )
            errors.append(
                {"loc": loc, "msg": msg, "type": str(e.get("type", "")), "message": message}
            )
            messages.append(message)
        return problem(422, summary(messages or ["invalid"]), errors=errors)

    @app.exception_handler(RunNotFound)
    async def not_found(_: Request, exc: RunNotFound) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(ResourceConflict)
    async def resource_conflict(_: Request, exc: ResourceConflict) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        # SQLSTATE class 22 is a data exception: a value the database cannot take (a NUL
        # character, a string longer than its column). That is invalid input, not a bug.
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if isinstance(code, str) and code.startswith("22"):
            message = str(getattr(exc.orig, "args", [""])[0] or exc.orig).splitlines()[0]
            return problem(422, f"a value cannot be stored: {message}")
        return await unexpected(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, Unavailable) or transient(exc):
            log.warning("database or broker unavailable: %s", exc.__class__.__name__)
            response = problem(503, "the database or the broker is unavailable; try again")
            response.headers["Retry-After"] = "5"
            return response
        log.exception("unexpected error")
        return problem(500, "unexpected error; it has been logged")

"""API keys and roles.

Keys are random (256 bits) and stored only as a SHA-256 hash: with that much entropy a slow
password hash adds nothing. A key's name is unique, so that the audit log's actor names one
key. Roles are ordered: viewer (read) < operator (remove, execute now, execute) < admin (jobs,
settings, cleanup, deletes, keys). Every route declares the role it needs with
`requires(...)`; the authorization test reads those declarations from the app.

The key and the role are checked by the route itself (`RoleRoute`) before anything else,
its body included: a request without a valid key is refused before a byte of its body is
read, and a refused call that would change something is audited.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Table, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin import audit
from jobmanager.admin.limits import StrictJSONRequest
from jobmanager.admin.problems import ResourceConflict
from jobmanager.admin.schemas import Problem
from jobmanager.store.models import ApiKey

log = logging.getLogger(__name__)

Role = Literal["public", "viewer", "operator", "admin"]
RANK: dict[str, int] = {"public": 0, "viewer": 1, "operator": 2, "admin": 3}
KEY_PREFIX = "jm_"

api_keys = cast(Table, ApiKey.__table__)
bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name (for the audit log) and its role."""

    name: str
    role: str


ANONYMOUS = Principal("anonymous", "public")
UNKNOWN_KEY = Principal("unknown key", "public")
# Where a request's caller is kept (the access log reads it too).
CALLER = "jobmanager.caller"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class KeyNameTaken(ResourceConflict, ValueError):
    """Another key has this name already."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(conn: AsyncConnection, *, name: str, role: str) -> tuple[int, str]:
    """Store a new key for `role`; returns (id, key). The key is shown once, never stored."""
    if role not in ("viewer", "operator", "admin"):
        raise ValueError(f"unknown role {role!r} (viewer, operator or admin)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    # ON CONFLICT rather than an IntegrityError: the caller's transaction (with its audit
    # row) stays usable, and the refusal is recorded.
    key_id = await conn.scalar(
        insert(api_keys)
        .values(name=name, prefix=key[:10], key_hash=hash_key(key), role=role)
        .on_conflict_do_nothing(index_elements=[api_keys.c.name])
        .returning(api_keys.c.id)
    )
    if key_id is None:
        raise KeyNameTaken(f"an API key named {name!r} exists already; choose another name")
    return int(key_id), key


async def _lookup(conn: AsyncConnection, key: str, now: datetime) -> Principal | None:
    row = (
        await conn.execute(
            select(api_keys).where(
                api_keys.c.key_hash == hash_key(key), api_keys.c.revoked_at.is_(None)
            )
        )
    ).one_or_none()
    if row is None:
        return None
    # Last use, at minute resolution: no write on every request.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        await conn.execute(update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now))
    return Principal(f"key:{row.name}", row.role)


class RoleGuard:
    """The dependency that gives a route its caller and declares the route's role. The
    check itself ran before the body was read (`admit`, called by `RoleRoute`)."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(
        self,
        request: Request,
        # Not read here (`admit` reads the header): it documents the scheme in OpenAPI.
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        caller = request.scope.get(CALLER)
        if isinstance(caller, Principal) and RANK[caller.role] >= RANK[self.role]:
            return caller
        # A route that is not a RoleRoute: the same check, after its body was read.
        route = getattr(request.scope.get("route"), "path_format", request.url.path)
        return await admit(request, self.role, route=route)


async def admit(request: Request, role: str, *, route: str) -> Principal:
    """Authenticate the caller and check `role`: 401 without a valid key, 403 for a role
    that ranks lower. A refused call with a method that may change something is audited
    (actor if known, route, outcome `denied`)."""
    caller, refusal = await _check(request, role)
    request.scope[CALLER] = caller
    if refusal is None:
        return caller
    if request.method not in SAFE_METHODS:
        await _audit_refusal(request, caller, route, refusal)
    raise refusal


async def _check(request: Request, role: str) -> tuple[Principal, HTTPException | None]:
    scheme, key = get_authorization_scheme_param(request.headers.get("Authorization"))
    if not key or scheme.lower() != "bearer":
        return ANONYMOUS, HTTPException(
            401,
            "an API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await authenticate(request, key)
    if principal is None:
        return UNKNOWN_KEY, HTTPException(
            401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
        )
    if RANK[principal.role] < RANK[role]:
        return principal, HTTPException(
            403, f"this needs the {role} role; the key has the {principal.role} role"
        )
    return principal, None


async def _audit_refusal(
    request: Request, caller: Principal, route: str, refusal: HTTPException
) -> None:
    # The refusal stands whether or not it can be recorded: a database that cannot take
    # the row must not turn a 401 into something else.
    try:
        async with request.app.state.db.begin() as conn:
            await audit.record(
                conn,
                actor=caller,
                action=f"{request.method} {route}"[:100],
                target=request.url.path.replace("\x00", "\ufffd"),
                outcome="denied",
                detail={"status": refusal.status_code, "reason": str(refusal.detail)},
            )
    except Exception as exc:
        log.warning(
            "could not audit a refused %s %s (%s)", request.method, route, type(exc).__name__
        )


class PublicGuard(RoleGuard):
    """A public route's declaration: no key asked for, none documented."""

    def __init__(self) -> None:
        super().__init__("public")

    async def __call__(self) -> Principal:  # type: ignore[override]
        return ANONYMOUS


async def authenticate(request: Request, key: str) -> Principal | None:
    state: Any = request.app.state
    token = state.settings.admin_token
    if token is not None and hmac.compare_digest(key.encode(), token.get_secret_value().encode()):
        return Principal("bootstrap-token", "admin")
    if not key.startswith(KEY_PREFIX) or len(key) > 100:
        return None
    async with state.db.begin() as conn:
        return await _lookup(conn, key, datetime.now(UTC))


def _roles(dependant: Dependant) -> set[str]:
    found: set[str] = {dependant.call.role} if isinstance(dependant.call, RoleGuard) else set()
    for child in dependant.dependencies:
        found |= _roles(child)
    return found


class RoleRoute(APIRoute):
    """A route that checks the caller against the role it declares before anything else
    (its body is read only then, as I-JSON), and publishes that role as `x-required-role`
    in the OpenAPI document: API users see it, and the authorization test checks every
    route against it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        self.required_role: str | None = None
        super().__init__(path, endpoint, **kwargs)
        roles = _roles(self.dependant)
        if len(roles) > 1:
            raise TypeError(f"{path} declares several roles: {sorted(roles)}")
        if roles:
            role = self.required_role = roles.pop()
            self.openapi_extra = {**(self.openapi_extra or {}), "x-required-role": role}
            self.responses = {**_error_responses(self, role), **self.responses}

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def admitted(request: Request) -> Response:
            request = StrictJSONRequest(request.scope, request.receive)
            if self.required_role not in (None, "public"):
                await admit(request, str(self.required_role), route=self.path_format)
            return await handle(request)

        return admitted


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "model": Problem,
        "content": {"application/problem+json": {}},
    }


def _error_responses(route: APIRoute, role: str) -> dict[int | str, dict[str, Any]]:
    """The errors a route can answer, documented as problem details."""
    if role == "public":
        return {}
    responses: dict[int | str, dict[str, Any]] = {
        401: _problem_response("no API key, or an unknown or revoked one"),
        403: _problem_response(f"the key's role ranks below {role}"),
        422: _problem_response("invalid input"),
        503: _problem_response("the database or the broker is unavailable"),
    }
    if route.dependant.path_params:
        responses[404] = _problem_response("no such resource")
    if (route.methods or set()) - {"GET"}:
        responses[409] = _problem_response("the resource's state does not allow this")
    return responses


async def known_parameters(request: Request) -> None:
    """Refuse query parameters a route does not declare: a misspelt filter must not silently
    list everything."""
    route: Any = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.url.path.startswith("/api/"):
        return  # the console's pages read their own query in the browser
    declared = {p.alias for p in _query_params(dependant)}
    unknown = sorted(set(request.query_params) - declared)
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ("query", name),
                    "msg": "unknown parameter",
                    "input": request.query_params[name],
                }
                for name in unknown
            ]
        )


def _query_params(dependant: Dependant) -> list[Any]:
    found = list(dependant.query_params)
    for child in dependant.dependencies:
        found += _query_params(child)
    return found


def router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose routes publish their declared role and refuse unknown query
    parameters."""
    return APIRouter(route_class=RoleRoute, dependencies=[Depends(known_parameters)], **kwargs)


def requires(role: Role) -> Any:
    """Declare a route's role: `caller: Annotated[Principal, requires("operator")]`."""
    return Depends(PublicGuard() if role == "public" else RoleGuard(role))

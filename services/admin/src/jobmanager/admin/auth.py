"""API keys and roles.

Keys are random (256 bits) and stored only as a SHA-256 hash: with that much entropy a slow
password hash adds nothing. Roles are ordered: viewer (read) < operator (remove, execute now,
execute) < admin (jobs, settings, cleanup, deletes, keys). Every route declares the role it
needs with `requires(...)`; the authorization test reads those declarations from the app.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.schemas import Problem
from jobmanager.store.models import ApiKey

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


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_key(conn: AsyncConnection, *, name: str, role: str) -> tuple[int, str]:
    """Store a new key for `role`; returns (id, key). The key is shown once, never stored."""
    if role not in ("viewer", "operator", "admin"):
        raise ValueError(f"unknown role {role!r} (viewer, operator or admin)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = await conn.scalar(
        insert(api_keys)
        .values(name=name, prefix=key[:10], key_hash=hash_key(key), role=role)
        .returning(api_keys.c.id)
    )
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
    """The dependency that authenticates the caller and checks the route's role."""

    def __init__(self, role: Role) -> None:
        self.role = role

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                401,
                "an API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = await authenticate(request, credentials.credentials)
        if principal is None:
            raise HTTPException(
                401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if RANK[principal.role] < RANK[self.role]:
            raise HTTPException(
                403, f"this needs the {self.role} role; the key has the {principal.role} role"
            )
        return principal


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
    """A route that publishes the role it declares as `x-required-role` in the OpenAPI
    document: API users see it, and the authorization test checks every route against it."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        roles = _roles(self.dependant)
        if len(roles) > 1:
            raise TypeError(f"{path} declares several roles: {sorted(roles)}")
        if roles:
            role = roles.pop()
            self.openapi_extra = {**(self.openapi_extra or {}), "x-required-role": role}
            self.responses = {**_error_responses(self, role), **self.responses}


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

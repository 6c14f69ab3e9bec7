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
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

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
        if self.role == "public":
            return ANONYMOUS
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
            self.openapi_extra = {**(self.openapi_extra or {}), "x-required-role": roles.pop()}


def router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose routes publish their declared role."""
    return APIRouter(route_class=RoleRoute, **kwargs)


def requires(role: Role) -> Any:
    """Declare a route's role: `caller: Annotated[Principal, requires("operator")]`."""
    return Depends(RoleGuard(role))

"""API keys: list, create (the key is shown once), revoke."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, cast

from fastapi import HTTPException, Response
from sqlalchemy import Table, select, update

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, create_key, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.queries import page_by_id
from jobmanager.admin.routes.common import API, Cursor, Limit, SmallId
from jobmanager.admin.schemas import KeyCreated, KeyIn, KeyOut, Page
from jobmanager.admin.state import DB
from jobmanager.store.models import ApiKey

router = auth_router(prefix=API, tags=["keys"])
api_keys = cast(Table, ApiKey.__table__)


@router.get("/keys", response_model=Page[KeyOut])
async def list_keys(
    db: DB, _: Annotated[Principal, requires("admin")], limit: Limit = 50, cursor: Cursor = None
) -> Page[KeyOut]:
    async with db.connect() as conn:
        rows, next_cursor = await page_by_id(
            conn, select(api_keys), api_keys.c.id, limit=limit, cursor=cursor
        )
    return Page(items=[KeyOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/keys", response_model=KeyCreated, status_code=201)
async def new_key(
    body: KeyIn, db: DB, caller: Annotated[Principal, requires("admin")]
) -> KeyCreated:
    """Create a key; the response holds the key itself, which is never shown again."""
    async with audited(
        db, caller, "keys.create", f"key:{body.name}", detail={"role": body.role}
    ) as conn:
        key_id, key = await create_key(conn, name=body.name, role=body.role)
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).one()
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), key=key)


@router.delete("/keys/{key_id:int}", status_code=204)
async def revoke_key(
    key_id: SmallId, db: DB, caller: Annotated[Principal, requires("admin")]
) -> Response:
    async with audited(db, caller, "keys.revoke", f"key:{key_id}") as conn:
        revoked = await conn.scalar(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
            .returning(api_keys.c.id)
        )
        if revoked is None:
            raise HTTPException(404, f"key {key_id} does not exist or is revoked already")
    return Response(status_code=204)

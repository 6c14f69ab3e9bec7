"""`jobmanager apikey create`: a key straight into the database (no running admin needed)."""

from __future__ import annotations

from jobmanager.admin.auth import create_key
from jobmanager.core.config import DatabaseSettings
from jobmanager.store import db


async def create(*, role: str, name: str) -> str:
    settings = DatabaseSettings()
    await db.check(settings.database_url)
    engine = db.create_engine(settings.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            _, key = await create_key(conn, name=name, role=role)
    finally:
        await engine.dispose()
    return key

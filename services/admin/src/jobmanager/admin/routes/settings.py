"""The queue interval ("time between the execution of two jobs" of one lane)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.routes.common import API, deliver
from jobmanager.admin.state import DB, Pub
from jobmanager.store import ledger, settings
from jobmanager.store.settings import QueueSettings

router = auth_router(prefix=API, tags=["settings"])


@router.get("/settings/queue", response_model=QueueSettings)
async def get_queue(db: DB, _: Annotated[Principal, requires("viewer")]) -> QueueSettings:
    async with db.connect() as conn:
        return await settings.load(conn, "queue", QueueSettings)


@router.put("/settings/queue", response_model=QueueSettings)
async def put_queue(
    body: QueueSettings, db: DB, publisher: Pub, caller: Annotated[Principal, requires("admin")]
) -> QueueSettings:
    """Change the interval. It takes effect at the next dispatch of every lane, including
    lanes whose next run is already scheduled; nothing needs restarting."""
    now = datetime.now(UTC)
    async with audited(
        db, caller, "settings.queue", "queue", detail=body.model_dump(mode="json")
    ) as conn:
        await settings.save(conn, "queue", body)
        outbox = await ledger.apply_interval(conn, interval_s=body.interval_s, now=now)
    await deliver(publisher, outbox, now)
    await publisher.broadcast_change("settings")
    return body

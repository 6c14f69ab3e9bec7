"""The Executed Jobs and Failed Jobs pages: lists, deletes, Execute (failed), Auto Cleanup."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Literal

from fastapi import Depends, Response

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.queries import RunFilters, list_runs
from jobmanager.admin.routes.common import (
    API,
    Cursor,
    Limit,
    RunId,
    deliver,
    finished_filters,
    run_or_404,
)
from jobmanager.admin.schemas import Page, RunDetail, RunOut
from jobmanager.admin.state import DB, Pub
from jobmanager.store import cleanup, ledger, settings
from jobmanager.store.settings import CleanupSettings

router = auth_router(prefix=API)
Table = Literal["executed", "failed"]
Filters = Annotated[RunFilters, Depends(finished_filters)]


def _routes(table: Table) -> None:
    title = "Executed Jobs" if table == "executed" else "Failed Jobs"
    key = f"{table}_cleanup"
    tags: list[str | Enum] = [table]

    @router.get(
        f"/{table}",
        response_model=Page[RunOut],
        tags=tags,
        name=f"list_{table}",
        summary=f"The {title} table, newest first",
    )
    async def listing(
        db: DB,
        _: Annotated[Principal, requires("viewer")],
        filters: Filters,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[RunOut]:
        async with db.connect() as conn:
            return await list_runs(conn, table, filters, limit=limit, cursor=cursor)

    @router.delete(
        f"/{table}/{{run_id:int}}",
        status_code=204,
        tags=tags,
        name=f"delete_{table}",
        summary=f"Delete a row of the {title} table",
    )
    async def delete(
        run_id: RunId, db: DB, caller: Annotated[Principal, requires("admin")]
    ) -> Response:
        async with audited(db, caller, f"{table}.delete", f"run:{run_id}") as conn:
            await cleanup.delete_finished_run(conn, run_id=run_id, table=table)
        return Response(status_code=204)

    @router.get(
        f"/{table}/cleanup",
        response_model=CleanupSettings,
        tags=tags,
        name=f"get_{key}",
        summary=f"Auto Cleanup of the {title} table",
    )
    async def get_cleanup(db: DB, _: Annotated[Principal, requires("viewer")]) -> CleanupSettings:
        async with db.connect() as conn:
            return await settings.load(conn, key, CleanupSettings)

    @router.put(
        f"/{table}/cleanup",
        response_model=CleanupSettings,
        tags=tags,
        name=f"put_{key}",
        summary=f"Change the Auto Cleanup of the {title} table",
    )
    async def put_cleanup(
        body: CleanupSettings, db: DB, caller: Annotated[Principal, requires("admin")]
    ) -> CleanupSettings:
        async with audited(
            db, caller, f"{table}.cleanup", key, detail=body.model_dump(mode="json")
        ) as conn:
            await settings.save(conn, key, body)
        return body


_routes("executed")
_routes("failed")


@router.post("/failed/{run_id:int}/execute", response_model=RunDetail, tags=["failed"])
async def execute_failed(
    run_id: RunId, db: DB, publisher: Pub, caller: Annotated[Principal, requires("operator")]
) -> RunDetail:
    """Execute a failed run again: a new attempt that runs now. Its earlier attempts stay in
    its history (`GET /runs/{run_id}`)."""
    now = datetime.now(UTC)
    async with audited(db, caller, "failed.execute", f"run:{run_id}") as conn:
        outbox = await ledger.execute_failed(conn, run_id, now=now)
    await deliver(publisher, outbox, now)
    return await run_or_404(db, run_id)

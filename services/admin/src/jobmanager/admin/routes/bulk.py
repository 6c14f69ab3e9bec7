"""Bulk actions by filter: execute again, delete and remove many runs in one call.

Each takes the filters its table's list takes (`job`, `lane`, `since`, `until`, `q`) or an
explicit list of `run_ids` (or both), acts on at most `limit` matching runs (oldest first)
and answers how many matched, how many it changed and whether more match. `dry_run` only
counts. The roles are those of the single actions; each call is one audit row with the
filter and the counts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.queries import RunFilters, RunTable, matching_ids
from jobmanager.admin.routes.common import API, When, deliver
from jobmanager.admin.state import DB, Pub
from jobmanager.store import cleanup, ledger, settings
from jobmanager.store.outbox import Outbox

router = auth_router(prefix=API, tags=["bulk"])

MAX_LIMIT = 10_000
NO_NUL = r"^[^\x00]*$"  # Postgres text holds no NUL character


def _json_number(value: object) -> object:
    # A JSON integer may be written 3.0; a string or a boolean is not one.
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


# At most 2**53: above that a JSON number is not an exact integer for most clients.
RunIdIn = Annotated[int, Field(ge=1, le=2**53), BeforeValidator(_json_number)]


class BulkIn(BaseModel):
    """Which runs: the filters of the table's list, and/or their ids."""

    model_config = ConfigDict(extra="forbid")

    job: Annotated[str, Field(max_length=200, pattern=NO_NUL)] | None = None
    lane: Annotated[str, Field(max_length=2000, pattern=NO_NUL)] | None = None
    since: When | None = None
    until: When | None = None
    q: Annotated[str, Field(max_length=200, pattern=NO_NUL)] | None = None
    # Strict: a body that says `"dry_run": 0` is a mistake to refuse, not to guess at.
    run_ids: Annotated[list[RunIdIn], Field(max_length=MAX_LIMIT)] | None = None
    dry_run: StrictBool = False
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT), BeforeValidator(_json_number)] = 1000


class BulkOut(BaseModel):
    matched: int = Field(description="runs that matched (at most `limit`)")
    changed: int = Field(description="runs the action changed (0 for a dry run)")
    more: bool = Field(description="whether more runs match than `limit`")
    dry_run: bool


Action = Literal["execute", "delete", "remove"]


async def _bulk(
    db: DB, publisher: Pub, caller: Principal, table: RunTable, action: Action, body: BulkIn
) -> BulkOut:
    now = datetime.now(UTC)
    filters = RunFilters(job=body.job, lane=body.lane, since=body.since, until=body.until, q=body.q)
    detail: dict[str, object] = body.model_dump(mode="json", exclude_none=True)
    outbox = Outbox()
    async with audited(db, caller, f"{table}.{action}_many", f"runs:{table}", detail) as conn:
        ids, more = await matching_ids(conn, table, filters, run_ids=body.run_ids, limit=body.limit)
        changed = 0
        if not body.dry_run and ids:
            if action == "delete":
                changed = await cleanup.delete_finished_runs(
                    conn, ids, "failed" if table == "failed" else "executed"
                )
            elif action == "execute":
                acted = await ledger.execute_failed_runs(conn, ids, now=now)
                outbox, changed = acted.outbox, len(ids) - len(acted.refused)
            else:
                queue = await settings.load(conn, "queue", settings.QueueSettings)
                acted = await ledger.remove_runs(conn, ids, interval_s=queue.interval_s, now=now)
                outbox, changed = acted.outbox, len(ids) - len(acted.refused)
        detail.update(matched=len(ids), changed=changed, more=more)
    await deliver(publisher, outbox, now)
    return BulkOut(matched=len(ids), changed=changed, more=more, dry_run=body.dry_run)


@router.post("/failed/execute", response_model=BulkOut)
async def execute_failed_many(
    body: BulkIn, db: DB, publisher: Pub, caller: Annotated[Principal, requires("operator")]
) -> BulkOut:
    """Execute the matching failed runs again (as Execute, one by one)."""
    return await _bulk(db, publisher, caller, "failed", "execute", body)


@router.delete("/failed", response_model=BulkOut)
async def delete_failed_many(
    body: BulkIn, db: DB, publisher: Pub, caller: Annotated[Principal, requires("admin")]
) -> BulkOut:
    """Delete the matching rows of the Failed table."""
    return await _bulk(db, publisher, caller, "failed", "delete", body)


@router.delete("/executed", response_model=BulkOut)
async def delete_executed_many(
    body: BulkIn, db: DB, publisher: Pub, caller: Annotated[Principal, requires("admin")]
) -> BulkOut:
    """Delete the matching rows of the Executed table."""
    return await _bulk(db, publisher, caller, "executed", "delete", body)


@router.post("/queue/remove", response_model=BulkOut)
async def remove_many(
    body: BulkIn, db: DB, publisher: Pub, caller: Annotated[Principal, requires("operator")]
) -> BulkOut:
    """Remove the matching queued runs (dispatched and running ones are left alone)."""
    return await _bulk(db, publisher, caller, "queue", "remove", body)

"""Auto Cleanup of the Executed and Failed tables, event retention, and deleting by hand.

The contract, as the operator sees it (each table has its own settings, as in the original's
pop-up; "oldest" means earliest `finished_at`, then lowest run id):

* Disabled: nothing is ever deleted automatically.
* `row_count`: when the table holds more than `max_rows` rows, one pass deletes its
  `cleanup_amount` oldest rows (fewer only if the table holds fewer). The amount is the
  hysteresis: a table that has just been cleaned stays below the limit for a while, so it is not
  cleaned again on every new row. A table far over the limit shrinks by `cleanup_amount` per pass.
* `row_age`: one pass deletes the rows that finished before `now - max_age_s` (a row exactly
  `max_age_s` old stays), at most `cleanup_amount` of them, oldest first.
* `both`: the `row_age` pass, then, if the table still holds more than `max_rows` rows, the
  `row_count` pass with what is left of the amount. One pass never deletes more than
  `cleanup_amount` rows in total, and what it deletes is always the table's oldest rows.
* Deleting a run deletes its attempts; runs in any other state are never touched.
* Recorded events are deleted once received more than `events_s` ago, oldest first and in
  batches; their runs keep the event's id (`event_id`) but lose the link to the stored payload.

The admin service runs `cleanup_pass` every minute on each replica; a transaction-scoped advisory
lock lets only one of them clean at a time. Every function runs in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, cast

from sqlalchemy import ColumnElement, Select, Table, delete, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.store.ledger import Conflict, RunNotFound
from jobmanager.store.models import Event, Run
from jobmanager.store.settings import CleanupSettings, RetentionSettings, load

TableName = Literal["executed", "failed"]

TABLE_STATES: Final[dict[TableName, str]] = {"executed": "succeeded", "failed": "failed"}
TITLES: Final[dict[TableName, str]] = {"executed": "Executed", "failed": "Failed"}

# Key of the advisory lock that makes one admin replica clean at a time ("JMCLEAN1").
CLEANUP_LOCK_KEY: Final = 0x4A4D_434C_4541_4E31

runs = cast(Table, Run.__table__)
events = cast(Table, Event.__table__)


def _in_table(table: TableName) -> ColumnElement[bool]:
    # The state is rendered inline, not as a bind parameter: only then can Postgres match the
    # partial index (ix_runs_executed / ix_runs_failed) in a cached, generic plan too.
    return runs.c.state == literal(TABLE_STATES[table], literal_execute=True)


def _oldest(table: TableName, limit: int, *where: ColumnElement[bool]) -> Select[Any]:
    return (
        select(runs.c.id)
        .where(_in_table(table), *where)
        .order_by(runs.c.finished_at, runs.c.id)
        .limit(limit)
    )


async def _delete_oldest(
    conn: AsyncConnection, table: TableName, limit: int, *where: ColumnElement[bool]
) -> int:
    if limit <= 0:
        return 0
    # The state is checked again on the deleted row itself: a run that another transaction
    # moves out of the table meanwhile (Execute on the Failed page) is re-checked and skipped.
    result = await conn.execute(
        delete(runs).where(runs.c.id.in_(_oldest(table, limit, *where)), _in_table(table))
    )
    return result.rowcount


async def _over_limit(conn: AsyncConnection, table: TableName, max_rows: int) -> bool:
    # Counting stops after max_rows + 1 index entries: the exact size is not needed.
    capped = select(runs.c.id).where(_in_table(table)).limit(max_rows + 1).subquery()
    count = await conn.scalar(select(func.count()).select_from(capped))
    return (count or 0) > max_rows


async def clean_table(
    conn: AsyncConnection, *, table: TableName, settings: CleanupSettings, now: datetime
) -> int:
    """One Auto Cleanup pass over the Executed or Failed table; how many runs it deleted."""
    if not settings.enabled:
        return 0
    budget = settings.cleanup_amount
    deleted = 0
    if settings.method in ("row_age", "both"):
        cutoff = now - timedelta(seconds=settings.max_age_s)
        deleted += await _delete_oldest(conn, table, budget, runs.c.finished_at < cutoff)
    if settings.method in ("row_count", "both") and deleted < budget:
        if await _over_limit(conn, table, settings.max_rows):
            deleted += await _delete_oldest(conn, table, budget - deleted)
    return deleted


async def expire_events(
    conn: AsyncConnection, *, settings: RetentionSettings, now: datetime, batch: int = 5000
) -> int:
    """Delete up to `batch` of the oldest events received before `now - events_s`."""
    cutoff = now - timedelta(seconds=settings.events_s)
    oldest = (
        select(events.c.id)
        .where(events.c.received_at < cutoff)
        .order_by(events.c.received_at, events.c.id)
        .limit(batch)
    )
    result = await conn.execute(delete(events).where(events.c.id.in_(oldest)))
    return result.rowcount


async def delete_finished_runs(conn: AsyncConnection, run_ids: list[int], table: TableName) -> int:
    """Delete rows of the Executed or Failed table by hand; how many (runs in another state
    are left alone)."""
    result = await conn.execute(delete(runs).where(runs.c.id.in_(run_ids), _in_table(table)))
    return int(result.rowcount)


async def delete_finished_run(conn: AsyncConnection, *, run_id: int, table: TableName) -> None:
    """Delete one row of the Executed or Failed table by hand (RunNotFound, Conflict)."""
    if await delete_finished_runs(conn, [run_id], table):
        return
    state = await conn.scalar(select(runs.c.state).where(runs.c.id == run_id))
    if state is None:
        raise RunNotFound(f"run {run_id} does not exist")
    raise Conflict(f"run {run_id} is {state}, not in the {TITLES[table]} table")


@dataclass(frozen=True)
class CleanupReport:
    """How many rows one cleanup pass deleted."""

    executed: int
    failed: int
    events: int


async def cleanup_pass(conn: AsyncConnection, *, now: datetime) -> CleanupReport | None:
    """Apply the stored Auto Cleanup and retention settings; None if another replica is at it."""
    # Transaction-scoped: released at the caller's commit or rollback, never leaked.
    if not await conn.scalar(select(func.pg_try_advisory_xact_lock(CLEANUP_LOCK_KEY))):
        return None
    executed = await load(conn, "executed_cleanup", CleanupSettings)
    failed = await load(conn, "failed_cleanup", CleanupSettings)
    retention = await load(conn, "retention", RetentionSettings)
    return CleanupReport(
        executed=await clean_table(conn, table="executed", settings=executed, now=now),
        failed=await clean_table(conn, table="failed", settings=failed, now=now),
        events=await expire_events(conn, settings=retention, now=now),
    )

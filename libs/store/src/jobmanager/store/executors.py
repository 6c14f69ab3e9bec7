"""What executors report about themselves (the script catalogue the admin API checks)."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.core.messages import ExecutorReport
from jobmanager.store.models import Executor

executors = cast(Table, Executor.__table__)


async def record_report(conn: AsyncConnection, report: ExecutorReport) -> None:
    """Store an executor's latest report (newer reports replace older ones)."""
    values = {
        "scripts": sorted(report.scripts),
        "concurrency": report.concurrency,
        "busy": report.busy,
        "started_at": report.started_at,
        "last_seen_at": report.at,
    }
    statement = insert(executors).values(id=report.executor, **values)
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=[executors.c.id],
            set_=values,
            where=executors.c.last_seen_at <= statement.excluded.last_seen_at,
        )
    )

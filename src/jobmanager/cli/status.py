"""`jobmanager status`: the installation at a glance, from the database and the broker (the
same figures as the API's `GET /stats`, without a running admin)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select

from jobmanager.admin.config import AdminSettings
from jobmanager.admin.routes.overview import table_counts
from jobmanager.core.broker import connect
from jobmanager.core.runtime import Unavailable
from jobmanager.core.topology import Topology
from jobmanager.store import db
from jobmanager.store.models import Executor

executors = cast(Table, Executor.__table__)


async def dead_letters(settings: AdminSettings) -> str:
    """Messages parked in the dead queue, or why the broker cannot say."""
    try:
        connection = await connect(settings.amqp_url, name="jobmanager-status", timeout=5)
    except Unavailable as exc:
        return f"unknown: {exc}"
    try:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(
                Topology.from_settings(settings).dead_queue, passive=True
            )
        except Exception:  # the queue is declared by the first service that starts
            return "0 (no dead-letter queue yet: no service has started)"
        return str(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


def _ago(when: datetime, now: datetime) -> str:
    seconds = max(0, round((now - when).total_seconds()))
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def render(counts: dict[str, int], seen: list[Any], dead: str, window_s: float) -> str:
    """The report (pure): tables, lanes, executors, dead letters, one topic a line."""
    now = datetime.now(UTC)
    lines = [
        f"Jobs {counts['jobs']:,} · Queue {counts['queue']:,} ({counts['queued']:,} waiting) · "
        f"Executed Jobs {counts['executed']:,} · Failed Jobs {counts['failed']:,}",
        f"lanes: {counts['lanes_busy']:,} busy, {counts['lanes_waiting']:,} waiting",
        f"executors: {len(seen)} reported within {window_s:g} s",
    ]
    for row in seen:
        scripts = ", ".join(sorted(row.scripts)) or "none"
        lines.append(
            f"  {row.id}: busy {row.busy}/{row.concurrency}, seen {_ago(row.last_seen_at, now)}, "
            f"scripts: {scripts}"
        )
    lines.append(f"dead letters: {dead}")
    return "\n".join(lines)


async def status(settings: AdminSettings) -> str:
    await db.check(settings.database_url)
    engine = db.create_engine(settings.database_url, pool_size=1)
    try:
        counts = await table_counts(engine)
        since = datetime.now(UTC) - timedelta(seconds=settings.executor_report_window_s)
        async with engine.connect() as conn:
            seen = list(
                (
                    await conn.execute(
                        select(executors)
                        .where(executors.c.last_seen_at >= since)
                        .order_by(executors.c.id)
                    )
                ).all()
            )
    finally:
        await engine.dispose()
    return render(counts, seen, await dead_letters(settings), settings.executor_report_window_s)

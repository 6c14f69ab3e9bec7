"""What the route modules share: paging parameters, filters, publishing after commit."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import BeforeValidator

from jobmanager.admin.queries import RunFilters, run_detail
from jobmanager.admin.schemas import RunDetail
from jobmanager.admin.state import Database
from jobmanager.core.broker import Publisher
from jobmanager.store.ledger import RunNotFound
from jobmanager.store.outbox import Outbox

log = logging.getLogger(__name__)

API = "/api/v1"
PAGE_MAX = 500


def _iso_datetime(value: object) -> object:
    """Only ISO 8601 text is a time here (pydantic would also read 0.5 as a Unix time);
    a time without a zone is taken as UTC."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("an ISO 8601 date-time is expected, e.g. 2026-11-24T10:00:00Z")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


When = Annotated[datetime, BeforeValidator(_iso_datetime)]

# Ids within their columns' ranges (bigint for runs, integer for jobs and keys): anything
# else is invalid input (422), never a database error.
RunId = Annotated[int, Path(ge=1, le=2**63 - 1)]
SmallId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description=f"page size, at most {PAGE_MAX}")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="next_cursor of the previous page")
]
Text = Annotated[str | None, Query(max_length=200)]


def finished_filters(
    job: Text = None,
    lane: Text = None,
    since: Annotated[When | None, Query(description="finished at or after")] = None,
    until: Annotated[When | None, Query(description="finished before")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="text in command or feedback")
    ] = None,
) -> RunFilters:
    return RunFilters(job=job, lane=lane, since=since, until=until, q=q)


def queue_filters(
    job: Text = None,
    lane: Text = None,
    state: Annotated[Literal["queued", "dispatched", "running"] | None, Query()] = None,
    since: Annotated[When | None, Query(description="enqueued at or after")] = None,
    until: Annotated[When | None, Query(description="enqueued before")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="text in command or feedback")
    ] = None,
) -> RunFilters:
    return RunFilters(job=job, lane=lane, state=state, since=since, until=until, q=q)


async def run_or_404(db: Database, run_id: int) -> RunDetail:
    async with db.connect() as conn:
        detail = await run_detail(conn, run_id)
    if detail is None:
        raise RunNotFound(f"run {run_id} does not exist")
    return detail


async def deliver(publisher: Publisher, outbox: Outbox, now: datetime) -> None:
    """Publish what a committed action produced. Should the broker fail now, the matcher's
    lane check schedules the run again within a minute; the action itself stands."""
    try:
        await outbox.publish(publisher, now=now)
    except Exception:
        log.exception("publishing after an action failed; the lane check will repair it")

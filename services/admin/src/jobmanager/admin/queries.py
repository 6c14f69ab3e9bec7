"""The read side: lists with filters and keyset pagination, newest first.

A cursor is the sort key of the last row of a page, opaque to clients (base64url JSON). Keyset
pagination keeps every page as cheap as the first, whatever the table's size.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from fastapi import HTTPException
from sqlalchemy import ColumnElement, Row, Select, Table, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.schemas import AttemptOut, EndedBy, Page, RunDetail, RunOut
from jobmanager.store.models import QUEUE_STATES, Attempt, Event, Run

runs = cast(Table, Run.__table__)
attempts = cast(Table, Attempt.__table__)
events = cast(Table, Event.__table__)

RunTable = Literal["queue", "executed", "failed"]


def encode_cursor(values: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kinds: Sequence[type]) -> list[Any]:
    """The sort key in a cursor, checked against the expected kinds (422 if it is not one)."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(kinds):
            raise ValueError("wrong shape")
        values: list[Any] = []
        for value, kind in zip(raw, kinds, strict=True):
            if kind is datetime:
                values.append(datetime.fromisoformat(value))
            elif kind is int and isinstance(value, int) and not isinstance(value, bool):
                values.append(value)
            else:
                raise ValueError("wrong value")
        return values
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise HTTPException(422, f"cursor: not a cursor this list gave out ({exc})") from None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class RunFilters:
    job: str | None = None
    lane: str | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def run_out(row: Row[Any]) -> RunOut:
    return RunOut(
        id=row.id,
        job=row.job_name,
        job_id=row.job_id,
        script=row.script,
        lane=row.lane,
        command=row.command,
        state=row.state,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        enqueued_at=row.enqueued_at,
        not_before=row.not_before,
        execute_now=row.execute_now_at is not None,
        dispatched_at=row.dispatched_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_s=_seconds(row.started_at, row.finished_at),
        result=row.result,
        feedback=row.feedback,
        event_id=row.event_id,
        executor=row.executor,
        absorbed=row.absorbed,
        superseded_by=row.superseded_by,
        held=row.held_at is not None and row.state == "queued",
    )


async def list_runs(
    conn: AsyncConnection,
    table: RunTable,
    filters: RunFilters,
    *,
    limit: int,
    cursor: str | None,
) -> Page[RunOut]:
    """One page of the Queue (by enqueue order) or the Executed / Failed table (by finish)."""
    query, key, kinds = _filtered(select(runs), table, filters)
    if cursor is not None:
        after = decode_cursor(cursor, kinds)
        query = query.where(tuple_(*key) < tuple_(*after) if len(key) > 1 else key[0] < after[0])
    order = [column.desc() for column in key]
    rows = (await conn.execute(query.order_by(*order).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more:
        last = rows[-1]
        next_cursor = encode_cursor([getattr(last, column.name) for column in key])
    return Page(items=[run_out(r) for r in rows], next_cursor=next_cursor)


async def matching_ids(
    conn: AsyncConnection,
    table: RunTable,
    filters: RunFilters,
    *,
    run_ids: list[int] | None,
    limit: int,
) -> tuple[list[int], bool]:
    """The ids of the table's runs that match the filters (and are among `run_ids`, when
    given), oldest first, at most `limit`; and whether more match."""
    query, key, _ = _filtered(select(runs.c.id), table, filters)
    if run_ids is not None:
        query = query.where(runs.c.id.in_(run_ids))
    ids = list((await conn.scalars(query.order_by(*key).limit(limit + 1))).all())
    return ids[:limit], len(ids) > limit


def _filtered(
    query: Select[Any], table: RunTable, filters: RunFilters
) -> tuple[Select[Any], list[ColumnElement[Any]], list[type]]:
    """A table's rows that match the filters: the query, its order key and the key's types."""
    if table == "queue":
        states = [filters.state] if filters.state else list(QUEUE_STATES)
        query = query.where(runs.c.state.in_(states))
        key: list[ColumnElement[Any]] = [runs.c.id]
        kinds: list[type] = [int]
        when = runs.c.enqueued_at
    else:
        query = query.where(runs.c.state == ("succeeded" if table == "executed" else "failed"))
        key = [runs.c.finished_at, runs.c.id]
        kinds = [datetime, int]
        when = runs.c.finished_at
    if filters.job is not None:
        query = query.where(runs.c.job_name == filters.job)
    if filters.lane is not None:
        query = query.where(runs.c.lane == filters.lane)
    if filters.since is not None:
        query = query.where(when >= filters.since)
    if filters.until is not None:
        query = query.where(when < filters.until)
    if filters.q:
        pattern = _like(filters.q)
        query = query.where(
            or_(
                runs.c.command.ilike(pattern, escape="\\"),
                runs.c.feedback.ilike(pattern, escape="\\"),
            )
        )
    return query, key, kinds


# The events a debounced run absorbed: those of the runs it superseded, and of theirs.
_LINEAGE = text(
    "WITH RECURSIVE chain AS ("
    " SELECT id, event_id FROM runs WHERE superseded_by = :id"
    " UNION ALL"
    " SELECT r.id, r.event_id FROM runs AS r JOIN chain AS c ON r.superseded_by = c.id"
    ") SELECT event_id FROM chain ORDER BY id"
)


async def run_detail(conn: AsyncConnection, run_id: int) -> RunDetail | None:
    row = (await conn.execute(select(runs).where(runs.c.id == run_id))).one_or_none()
    if row is None:
        return None
    history = (
        await conn.execute(
            select(attempts).where(attempts.c.run_id == run_id).order_by(attempts.c.attempt)
        )
    ).all()
    event = None
    if row.event_pk is not None:
        event = await conn.scalar(select(events.c.payload).where(events.c.id == row.event_pk))
    absorbed = []
    if row.absorbed:
        absorbed = [str(e) for e in (await conn.scalars(_LINEAGE, {"id": run_id})).all() if e]
    ended_by = None
    if row.ended_by_event_pk is not None:
        ender = (
            await conn.execute(
                select(events.c.event_id, events.c.event_type).where(
                    events.c.id == row.ended_by_event_pk
                )
            )
        ).one_or_none()
        ended_by = EndedBy(
            id=row.ended_by_event_pk,
            event_id=ender.event_id if ender else None,
            event_type=ender.event_type if ender else None,
        )
    return RunDetail(
        **run_out(row).model_dump(),
        output_tail=row.output_tail,
        event=event,
        absorbed_events=absorbed,
        ended_by_event=ended_by,
        attempts=[
            AttemptOut(
                attempt=a.attempt,
                dispatched_at=a.dispatched_at,
                started_at=a.started_at,
                finished_at=a.finished_at,
                duration_s=_seconds(a.started_at, a.finished_at),
                result=a.result,
                feedback=a.feedback,
                executor=a.executor,
                output_tail=a.output_tail,
            )
            for a in history
        ],
    )


async def page_by_id(
    conn: AsyncConnection,
    query: Select[Any],
    id_column: ColumnElement[int],
    *,
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    """A keyset page of any table ordered by a descending integer id."""
    if cursor is not None:
        query = query.where(id_column < decode_cursor(cursor, [int])[0])
    rows = (await conn.execute(query.order_by(id_column.desc()).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor([rows[-1].id]) if more else None


def text_filter(columns: Sequence[ColumnElement[str]], q: str | None) -> ColumnElement[bool] | None:
    if not q:
        return None
    pattern = _like(q)
    return or_(*(c.ilike(pattern, escape="\\") for c in columns))

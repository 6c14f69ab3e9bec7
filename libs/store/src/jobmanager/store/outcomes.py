"""What the ledger's functions give back: refusals, the gate's decisions, the changes of a
batch, and the rows they return turned into the messages to publish (`collect`).

`jobmanager.store.ledger` calls the functions; this module only reads their rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, TextualSelect, text
from sqlalchemy.dialects.postgresql import JSONB

from jobmanager.core.messages import CancelRequest, JobNotice, JobRef, JobRequest, RunNotice
from jobmanager.store.outbox import Outbox


class LedgerError(Exception):
    """An operator action that the run's state does not allow."""


class RunNotFound(LedgerError):
    pass


class Conflict(LedgerError):
    pass


class JobNotFound(LedgerError):
    pass


@dataclass(frozen=True)
class Dispatch:
    """The gate sends this request (with its event) to the executors."""

    request: JobRequest


@dataclass(frozen=True)
class Wait:
    """The request came early; it is due at `until`."""

    until: datetime


@dataclass(frozen=True)
class Stale:
    """The request is no longer wanted (removed, executed, rescheduled, duplicate)."""

    reason: str


@dataclass(frozen=True)
class Lost:
    """The result recorded for an attempt whose executor never reported one: failed for
    good, with `feedback` saying why, its start and executor taken from the run."""

    run_id: int
    attempt: int
    feedback: str


@dataclass
class Changes:
    """What a batch did: its outbox and, per input, whether it changed the ledger (False:
    seen before, or for an attempt that is no longer active)."""

    outbox: Outbox = field(default_factory=Outbox)
    recorded: list[bool] = field(default_factory=list)
    # Why a result that changed nothing was ignored, by its index (`ledger_record` only).
    ignored: dict[int, str] = field(default_factory=dict)


@dataclass
class Acted:
    """What an operator action on many runs did: its outbox, and why each run it could not
    act on was refused (by run id)."""

    outbox: Outbox
    refused: dict[int, str]


def request_for(run: Row[Any], now: datetime) -> JobRequest:
    return JobRequest(
        run_id=run.id,
        attempt=run.attempt,
        token=run.token,
        job=JobRef(id=run.job_id, name=run.job_name),
        script=run.script,
        command=run.command,
        timeout_s=run.timeout_s,
        lane=run.lane,
        event_id=run.event_id,
        not_before=run.not_before,
        requested_at=now,
    )


def notice_for(run: Row[Any], now: datetime) -> RunNotice:
    return RunNotice(
        run_id=run.id,
        state=run.state,
        attempt=run.attempt,
        job=run.job_name,
        lane=run.lane,
        event_id=run.event_id,
        result=run.result,
        feedback=run.feedback,
        at=now,
    )


def call(function: str) -> TextualSelect:
    # `function` is one of the constants below; no value is formatted into the SQL.
    query = f"SELECT f.kind, f.item, f.note, f.payload, (f.run).* FROM {function} AS f"  # noqa: S608
    return text(query).columns(payload=JSONB)


def _timestamp(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def as_json(value: Any) -> str:
    return json.dumps(value, default=_timestamp)


def collect(
    rows: Iterable[Row[Any]], now: datetime, inputs: int = 0, refused: dict[int, str] | None = None
) -> Changes:
    """Sort the rows a ledger function returned into a `Changes`. A refused operator action
    raises, unless `refused` collects the refusals (by the input's index)."""
    done = Changes(recorded=[False] * inputs)
    outbox = done.outbox
    for row in rows:
        if row.kind == "recorded":
            done.recorded[row.item] = True
        elif row.kind == "notice":
            outbox.notices.append(notice_for(row, now))
        elif row.kind == "request":
            outbox.requests.append(request_for(row, now))
        elif row.kind == "work":
            outbox.work.append(request_for(row, now).model_copy(update={"event": row.payload}))
        elif row.kind in ("paused", "resumed"):
            outbox.job_notices.append(
                JobNotice(
                    job_id=row.payload["job_id"],
                    job=row.payload["job"],
                    state=row.kind,
                    reason=row.payload["reason"],
                    at=now,
                )
            )
        elif row.kind == "ignored":
            done.ignored[row.item] = row.note
        elif row.kind == "cancel":
            outbox.cancels.append(
                CancelRequest(
                    run_id=row.id,
                    attempt=row.payload["attempt"],
                    by=row.payload["by"],
                    grace_s=row.payload["grace_s"],
                    at=now,
                )
            )
        elif row.kind in ("missing", "conflict") and refused is not None:
            refused[row.item] = row.note
        elif row.kind == "missing":
            raise (JobNotFound if row.note.startswith("job ") else RunNotFound)(row.note)
        elif row.kind == "conflict":
            raise Conflict(row.note)
        else:
            raise ValueError(f"a ledger function returned a row of kind {row.kind!r}")
    return done

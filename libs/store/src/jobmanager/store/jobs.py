"""Reading and writing job definitions (the Jobs table) as `JobSpec`s, and the scripts the
executors offer for them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, delete, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.jobs.spec import CancelTrigger, JobSpec, Trigger
from jobmanager.store import ledger
from jobmanager.store.models import Executor, Job
from jobmanager.store.outbox import Outbox

jobs = cast(Table, Job.__table__)
executors = cast(Table, Executor.__table__)


def columns(spec: JobSpec) -> dict[str, Any]:
    """The table's columns for a job."""
    return {
        "name": spec.name,
        "description": spec.description,
        "enabled": spec.enabled,
        "event_type": spec.trigger.event_type,
        "conditions": [c.model_dump(mode="json") for c in spec.trigger.conditions],
        "script": spec.script,
        "command_template": spec.command_template,
        "lane": spec.lane,
        "timeout_s": spec.timeout_s,
        "max_attempts": spec.max_attempts,
        "retry_backoff_s": spec.retry_backoff_s,
        "cancel_grace_s": spec.cancel_grace_s,
        "pause_after_failures": spec.pause_after_failures,
        "max_concurrency": spec.max_concurrency,
        "debounce_s": spec.debounce_s,
        "debounce_max_s": spec.debounce_max_s,
        "cancel_on": [c.model_dump(mode="json") for c in spec.cancel_on],
    }


def to_spec(row: Row[Any]) -> JobSpec:
    """A stored job as a JobSpec (validated again: the stored form is the API's form). Its
    `paused` is None: a job's pause changes only by `set_paused`, never by a stored form."""
    return JobSpec(
        name=row.name,
        description=row.description,
        enabled=row.enabled,
        trigger=Trigger.model_validate(
            {"event_type": row.event_type, "conditions": row.conditions}
        ),
        script=row.script,
        command_template=row.command_template,
        lane=row.lane,
        timeout_s=row.timeout_s,
        max_attempts=row.max_attempts,
        retry_backoff_s=row.retry_backoff_s,
        cancel_grace_s=row.cancel_grace_s,
        pause_after_failures=row.pause_after_failures,
        max_concurrency=row.max_concurrency,
        debounce_s=row.debounce_s,
        debounce_max_s=row.debounce_max_s,
        cancel_on=[CancelTrigger.model_validate(c) for c in row.cancel_on],
    )


async def all_jobs(conn: AsyncConnection) -> list[Row[Any]]:
    return list((await conn.execute(select(jobs).order_by(jobs.c.id))).all())


async def upsert(conn: AsyncConnection, spec: JobSpec) -> tuple[int, bool]:
    """Create or update the job named `spec.name`; returns (id, created)."""
    values = columns(spec)
    statement = insert(jobs).values(**values)
    row = (
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[jobs.c.name],
                set_={
                    **{k: statement.excluded[k] for k in values if k != "name"},
                    "updated_at": func.now(),
                },
                # xmax is 0 only for a freshly inserted row version: Postgres's "was inserted".
            ).returning(jobs.c.id, literal_column("xmax = 0").label("created"))
        )
    ).one()
    return row.id, bool(row.created)


async def delete_named(conn: AsyncConnection, names: list[str]) -> int:
    """Delete jobs by name; their runs keep their history (job_id becomes null)."""
    if not names:
        return 0
    result = await conn.execute(delete(jobs).where(jobs.c.name.in_(names)))
    return int(result.rowcount)


async def get(conn: AsyncConnection, job_id: int) -> Row[Any] | None:
    return (await conn.execute(select(jobs).where(jobs.c.id == job_id))).one_or_none()


async def id_named(conn: AsyncConnection, name: str) -> int | None:
    found = await conn.scalar(select(jobs.c.id).where(jobs.c.name == name))
    return int(found) if found is not None else None


async def replace(conn: AsyncConnection, job_id: int, spec: JobSpec) -> None:
    """Store `spec` as job `job_id` (a name another job has raises IntegrityError)."""
    await conn.execute(
        update(jobs).where(jobs.c.id == job_id).values(**columns(spec), updated_at=func.now())
    )


async def delete_one(conn: AsyncConnection, job_id: int) -> str | None:
    """Delete a job; its name, or None if there was none. Its runs keep their history."""
    name = await conn.scalar(delete(jobs).where(jobs.c.id == job_id).returning(jobs.c.name))
    return str(name) if name is not None else None


async def known_scripts(conn: AsyncConnection, since: datetime) -> dict[str, list[str]]:
    """Scripts the executors reported since `since`, each with the executors that have it."""
    rows = (
        await conn.execute(
            select(executors.c.id, executors.c.scripts).where(executors.c.last_seen_at >= since)
        )
    ).all()
    catalogue: dict[str, list[str]] = {}
    for row in rows:
        for name in row.scripts:
            catalogue.setdefault(str(name), []).append(row.id)
    return catalogue


async def set_paused(
    conn: AsyncConnection,
    job_id: int,
    paused: bool | None,
    *,
    actor: str,
    interval_s: float,
    now: datetime,
) -> Outbox:
    """Pause (True) or resume (False) a job through the ledger, which holds or frees its
    runs; None changes nothing. Pausing or resuming twice changes nothing the second time."""
    if paused is None:
        return Outbox()
    if paused:
        reason = f"paused by {actor}"
        return await ledger.pause(conn, job_id, reason=reason, interval_s=interval_s, now=now)
    return await ledger.resume(conn, job_id, interval_s=interval_s, now=now)


def unknown_script(script: str, known: Iterable[str]) -> str | None:
    """Why `script` may not be a job's script (None: it may): the one wording of the refusal,
    for the API and `jobmanager apply` alike."""
    names = sorted(set(known))
    if script in names:
        return None
    listing = ", ".join(names) or "none: no executor has reported its scripts lately"
    return f"unknown script {script!r}; known scripts: {listing}"

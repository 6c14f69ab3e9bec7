"""The Jobs page: CRUD with validation, and a dry run of a job against an event.

Templates are rendered by the admin's render pool (`jobmanager.jobs.renderer`), never in the
admin's own process: a dry run or a trial render is bounded by the same CPU-time and memory
limits as the matcher's renders, and the event loop serves other requests meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

from fastapi import Depends, HTTPException, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import Row, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from jobmanager.admin.audit import audited
from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.problems import invalid, invalid_model
from jobmanager.admin.queries import page_by_id, text_filter
from jobmanager.admin.routes.common import API, Cursor, Limit, SmallId, deliver
from jobmanager.admin.schemas import CheckOut, DryRunIn, DryRunOut, JobOut, JobPatch, Page
from jobmanager.admin.state import DB, Pub, Settings
from jobmanager.core.broker import Publisher
from jobmanager.core.messages import Event
from jobmanager.jobs.matching import explain
from jobmanager.jobs.renderer import Crashed, Rendered, RenderPool, Templates
from jobmanager.jobs.spec import JobSpec
from jobmanager.store import jobs as job_store
from jobmanager.store import settings as settings_store
from jobmanager.store.models import Event as EventRow
from jobmanager.store.models import Job
from jobmanager.store.settings import QueueSettings

router = auth_router(prefix=API, tags=["jobs"])
jobs = cast(Table, Job.__table__)
events = cast(Table, EventRow.__table__)
# Recorded events looked through, newest first, for one the job matches (its trial render).
SAMPLE_EVENTS = 50


def _renderer(request: Request) -> RenderPool:
    return cast(RenderPool, request.app.state.renderer)


Renderer = Annotated[RenderPool, Depends(_renderer)]


def job_out(row: Row[Any]) -> JobOut:
    return JobOut(
        **{
            **job_store.to_spec(row).model_dump(),
            "paused": row.paused,
            "paused_at": row.paused_at,
            "paused_reason": row.paused_reason,
        },
        id=row.id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def known_scripts(conn: AsyncConnection, window_s: float) -> dict[str, list[str]]:
    """Scripts the executors reported recently, each with the executors that have it."""
    return await job_store.known_scripts(conn, datetime.now(UTC) - timedelta(seconds=window_s))


async def _check_script(conn: AsyncConnection, script: str, window_s: float) -> None:
    refusal = job_store.unknown_script(script, await known_scripts(conn, window_s))
    if refusal is not None:
        raise invalid(("body", "script"), refusal, script)


async def _load(conn: AsyncConnection, job_id: SmallId) -> Row[Any]:
    row = await job_store.get(conn, job_id)
    if row is None:
        raise HTTPException(404, f"job {job_id} does not exist")
    return row


async def _sample(conn: AsyncConnection, spec: JobSpec) -> dict[str, Any]:
    """The event a new or changed job is tried on: the newest recorded event (of the last
    SAMPLE_EVENTS) that it matches, else one of its event type with no data."""
    query = select(events.c.payload).order_by(events.c.id.desc()).limit(SAMPLE_EVENTS)
    for payload in await conn.scalars(query):
        if explain(spec.trigger, payload).matched:
            return dict(payload)
    event_type = spec.trigger.event_type.replace("*", "sample").replace("#", "sample")
    return Event(event_id="sample", event_type=event_type).document()


async def _try_templates(conn: AsyncConnection, spec: JobSpec, renderer: RenderPool) -> None:
    """Refuse a job whose templates exceed a render limit on a sample event (422). Other
    template errors are not refused: the sample may lack what real events carry. The lane is
    tried on its own, so that a command that fails on the sample does not hide it."""
    document = await _sample(conn, spec)
    tried = [("command_template", Templates(spec.command_template, None))]
    if spec.lane is not None:
        tried.append(("lane", Templates("", spec.lane)))
    [outcome] = await renderer.render([(document, [templates for _, templates in tried])])
    if isinstance(outcome, Crashed):
        raise invalid(("body", "command_template"), outcome.reason, spec.command_template)
    for (field, _), rendered in zip(tried, outcome, strict=True):
        if rendered.limit is not None:
            raise invalid(
                ("body", field),
                f"{rendered.error} (tried on event {document.get('event_id')!r})",
                getattr(spec, field),
            )


async def _changed(publisher: Publisher) -> None:
    await publisher.broadcast_change("jobs")


@router.get("/jobs", response_model=Page[JobOut])
async def list_jobs(
    db: DB,
    _: Annotated[Principal, requires("viewer")],
    q: Annotated[
        str | None, Query(max_length=200, description="text in name or description")
    ] = None,
    script: Annotated[str | None, Query(max_length=100)] = None,
    enabled: bool | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[JobOut]:
    """Registered jobs, newest first."""
    query = select(jobs)
    if (match := text_filter([jobs.c.name, jobs.c.description], q)) is not None:
        query = query.where(match)
    if script is not None:
        query = query.where(jobs.c.script == script)
    if enabled is not None:
        query = query.where(jobs.c.enabled == enabled)
    async with db.connect() as conn:
        rows, next_cursor = await page_by_id(conn, query, jobs.c.id, limit=limit, cursor=cursor)
    return Page(items=[job_out(r) for r in rows], next_cursor=next_cursor)


@router.post("/jobs", response_model=JobOut, status_code=201)
async def create_job(
    spec: JobSpec,
    db: DB,
    publisher: Pub,
    settings: Settings,
    renderer: Renderer,
    caller: Annotated[Principal, requires("admin")],
) -> JobOut:
    """Register a job. Unknown script: 422 listing the known ones; name taken: 409; a
    template over a render limit on a sample event: 422 naming the limit."""
    async with audited(
        db, caller, "jobs.create", f"job:{spec.name}", detail=spec.model_dump(mode="json")
    ) as conn:
        await _check_script(conn, spec.script, settings.executor_report_window_s)
        exists = await job_store.id_named(conn, spec.name)
        if exists is not None:
            raise HTTPException(409, f"a job named {spec.name!r} exists already (id {exists})")
        await _try_templates(conn, spec, renderer)
        job_id, _ = await job_store.upsert(conn, spec)
        outbox = await job_store.set_paused(
            conn,
            job_id,
            spec.paused,
            actor=caller.name,
            interval_s=0.0,
            now=datetime.now(UTC),
        )
        row = await _load(conn, job_id)
    await deliver(publisher, outbox, datetime.now(UTC))
    await _changed(publisher)
    return job_out(row)


@router.get("/jobs/{job_id:int}", response_model=JobOut)
async def get_job(job_id: SmallId, db: DB, _: Annotated[Principal, requires("viewer")]) -> JobOut:
    async with db.connect() as conn:
        return job_out(await _load(conn, job_id))


@router.patch("/jobs/{job_id:int}", response_model=JobOut)
async def patch_job(
    job_id: SmallId,
    patch: JobPatch,
    db: DB,
    publisher: Pub,
    settings: Settings,
    renderer: Renderer,
    caller: Annotated[Principal, requires("admin")],
) -> JobOut:
    """Change some fields of a job; the job as a whole is validated again (its templates
    tried again when they or its trigger change)."""
    changes = patch.model_dump(exclude_unset=True, mode="json")
    async with audited(db, caller, "jobs.update", f"job:{job_id}", detail=changes) as conn:
        current = job_store.to_spec(await _load(conn, job_id)).model_dump(mode="json")
        try:
            spec = JobSpec.model_validate({**current, **changes})
        except ValidationError as exc:
            raise invalid_model(("body",), exc, JobSpec) from None
        if "script" in changes:
            await _check_script(conn, spec.script, settings.executor_report_window_s)
        if changes.keys() & {"command_template", "lane", "trigger"}:
            await _try_templates(conn, spec, renderer)
        try:
            await job_store.replace(conn, job_id, spec)
        except IntegrityError:
            raise HTTPException(409, f"a job named {spec.name!r} exists already") from None
        interval = (await settings_store.load(conn, "queue", QueueSettings)).interval_s
        outbox = await job_store.set_paused(
            conn,
            job_id,
            spec.paused,
            actor=caller.name,
            interval_s=interval,
            now=datetime.now(UTC),
        )
        row = await _load(conn, job_id)
    await deliver(publisher, outbox, datetime.now(UTC))
    await _changed(publisher)
    return job_out(row)


@router.delete("/jobs/{job_id:int}", status_code=204)
async def delete_job(
    job_id: SmallId, db: DB, publisher: Pub, caller: Annotated[Principal, requires("admin")]
) -> Response:
    """Delete a job. Its runs keep their history (job name and script were snapshots)."""
    async with audited(db, caller, "jobs.delete", f"job:{job_id}") as conn:
        if await job_store.delete_one(conn, job_id) is None:
            raise HTTPException(404, f"job {job_id} does not exist")
    await _changed(publisher)
    return Response(status_code=204)


@router.post("/jobs/{job_id:int}/test", response_model=DryRunOut)
async def test_job(
    job_id: SmallId,
    body: DryRunIn,
    db: DB,
    renderer: Renderer,
    _: Annotated[Principal, requires("viewer")],
) -> DryRunOut:
    """Dry-run a job's trigger and templates against an event given whole, by id, or the
    latest recorded one; says which condition failed and what the command would be. A
    template over a render limit: 422 naming the limit."""
    async with db.connect() as conn:
        spec = job_store.to_spec(await _load(conn, job_id))
        document = await _event_document(conn, body)
    explanation = explain(spec.trigger, document)
    rendered = await renderer.render_one(document, Templates(spec.command_template, spec.lane))
    if rendered.limit is not None or rendered.crashed:
        raise HTTPException(422, rendered.error)
    command, lane, error = _shown(rendered)
    return DryRunOut(
        matched=explanation.matched,
        event_type_ok=explanation.event_type_ok,
        event_type_reason=explanation.event_type_reason,
        checks=[
            CheckOut(
                path=c.condition.path,
                op=c.condition.op,
                value=c.condition.value,
                passed=c.passed,
                reason=c.reason,
            )
            for c in explanation.checks
        ],
        command=command,
        lane=lane,
        error=error,
        event=document,
    )


def _shown(rendered: Rendered) -> tuple[str | None, str | None, str | None]:
    """A dry run's command, lane and error: the command also when only the lane failed."""
    if rendered.error is not None:
        return rendered.command or None, None, rendered.error
    return rendered.command, rendered.lane, None


async def _event_document(conn: AsyncConnection, body: DryRunIn) -> dict[str, Any]:
    if body.event is not None:
        try:
            return Event.model_validate(body.event).document()
        except ValidationError as exc:
            raise invalid_model(("body", "event"), exc) from None
    query = select(events.c.payload).order_by(events.c.id.desc()).limit(1)
    if body.event_id is not None:
        query = query.where(events.c.event_id == body.event_id)
    payload = await conn.scalar(query)
    if payload is None:
        raise HTTPException(
            404,
            "no such recorded event"
            if body.event_id
            else "no event has been recorded yet; give one in the body",
        )
    return dict(payload)

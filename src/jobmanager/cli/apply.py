"""`jobmanager apply FILE`: declarative settings and jobs from YAML.

The whole file is validated before anything is written (its shape, and each job's script
against the scripts the executors report, as the admin API does), and everything is written
in one transaction; then the running matchers are told to reload. Applying the same file
twice changes nothing the second time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from sqlalchemy import select

from jobmanager.admin.config import AdminSettings
from jobmanager.core.broker import Publisher, connect
from jobmanager.core.config import DatabaseSettings
from jobmanager.core.runtime import load_settings
from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import JobSpec
from jobmanager.jobs.wording import describe
from jobmanager.store import db, settings
from jobmanager.store import jobs as job_store
from jobmanager.store.models import Setting
from jobmanager.store.outbox import Outbox
from jobmanager.store.settings import CleanupSettings, QueueSettings, RetentionSettings

SETTINGS_KEYS = ("queue", "executed_cleanup", "failed_cleanup", "retention")
SHOWN = 100  # problems listed at most; the count says how many there are


class ApplyError(ValueError):
    """The file cannot be applied; the message says where and why."""


class SettingsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queue: QueueSettings | None = None
    executed_cleanup: CleanupSettings | None = None
    failed_cleanup: CleanupSettings | None = None
    retention: RetentionSettings | None = None


class ApplyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    settings: SettingsSection = SettingsSection()
    jobs: list[JobSpec] = []

    @model_validator(mode="after")
    def _unique_names(self) -> ApplyDocument:
        if twice := duplicates([job.name for job in self.jobs]):
            raise ValueError(twice[0])
        return self


def duplicates(names: Iterable[object]) -> list[str]:
    """A problem for each job name given more than once."""
    counted = Counter(name for name in names if isinstance(name, str))
    return [f'job "{name}" appears {n} times' for name, n in counted.items() if n > 1]


def job_label(index: int, name: object) -> str:
    """How a problem names a job of the file: by its name, else by its place."""
    return f'job "{name}"' if isinstance(name, str) and name else f"job #{index + 1} (no name)"


def _said(error: Any, raw: Any) -> str:
    """One validation error in words, a job's named by the job (not `jobs.3`)."""
    loc = tuple(error["loc"])
    jobs = raw.get("jobs") if isinstance(raw, dict) else None
    if len(loc) >= 2 and loc[0] == "jobs" and isinstance(loc[1], int) and isinstance(jobs, list):
        item = jobs[loc[1]] if loc[1] < len(jobs) else None
        name = item.get("name") if isinstance(item, dict) else None
        return f"{job_label(loc[1], name)}: {describe({**error, 'loc': loc[2:]}, JobSpec)}"
    return describe(error, ApplyDocument)


def _refused(origin: str, problems: list[str]) -> ApplyError:
    lines = [f"{origin}: {len(problems)} problem(s)", *(f"  {p}" for p in problems[:SHOWN])]
    if len(problems) > SHOWN:
        lines.append(f"  and {len(problems) - SHOWN} more")
    return ApplyError("\n".join(lines))


def load_document(text: str, *, origin: str = "<file>") -> ApplyDocument:
    """Parse and validate an apply file (pure). Refused with every problem it has at once:
    each job's, named by the job, and names given twice."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ApplyError(f"{origin}: not valid YAML: {exc}") from None
    try:
        return ApplyDocument.model_validate(raw or {})
    except ValidationError as exc:
        problems = [_said(error, raw) for error in exc.errors() if error["loc"]]
        jobs = raw.get("jobs") if isinstance(raw, dict) else None
        if isinstance(jobs, list):
            problems += duplicates(j.get("name") for j in jobs if isinstance(j, dict))
        else:
            # Only the document as a whole failed: the unique names rule, or not a mapping.
            problems += [_said(error, raw) for error in exc.errors() if not error["loc"]]
        raise _refused(origin, problems) from None


def missing_only(
    document: ApplyDocument, stored_jobs: Collection[str], stored_settings: Collection[str]
) -> tuple[ApplyDocument, list[str]]:
    """What of `document` the database does not hold yet (pure), and what it holds already
    (settings by key, jobs by name), which is then left as it is."""
    kept = [
        f"settings {key}"
        for key in SETTINGS_KEYS
        if getattr(document.settings, key) is not None and key in stored_settings
    ]
    kept += [f"job {spec.name}" for spec in document.jobs if spec.name in stored_jobs]
    section = SettingsSection(
        **{
            key: getattr(document.settings, key)
            for key in SETTINGS_KEYS
            if key not in stored_settings
        }
    )
    jobs = [spec for spec in document.jobs if spec.name not in stored_jobs]
    return ApplyDocument(settings=section, jobs=jobs), kept


def script_problems(
    document: ApplyDocument, stored: dict[str, JobSpec], known: Iterable[str]
) -> list[str]:
    """The jobs whose script no executor offers, as the API decides it (pure): a job created,
    or given another script, must name a known script; a job that keeps its script is not
    checked again (as `PATCH /jobs/{id}` without `script`)."""
    names = set(known)
    problems = []
    for index, spec in enumerate(document.jobs):
        before = stored.get(spec.name)
        if before is not None and before.script == spec.script:
            continue
        reason = job_store.unknown_script(spec.script, names)
        if reason is not None:
            problems.append(f"{job_label(index, spec.name)}: script: {reason}")
    return problems


async def apply_document(
    document: ApplyDocument,
    app_settings: DatabaseSettings,
    *,
    prune: bool,
    window_s: float,
    origin: str = "<file>",
    keep_existing: bool = False,
) -> str:
    """Write the document in one transaction, then tell the matchers to reload.

    Refused (ApplyError, nothing written) when a job names a script that no executor reported
    within `window_s`: the API's rule and window. With `keep_existing`, what the database
    already holds stays as it is (settings stored once, jobs of the same name): only what is
    missing is written.
    """
    await db.check(app_settings.database_url)
    engine = db.create_engine(app_settings.database_url, pool_size=1)
    created = updated = unchanged = deleted = 0
    changed: list[str] = []
    kept: list[str] = []
    wanted = {spec.name for spec in document.jobs}
    outbox = Outbox()
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            stored = {row.name: job_store.to_spec(row) for row in await job_store.all_jobs(conn)}
            if keep_existing:
                held = set((await conn.scalars(select(Setting.key))).all())
                document, kept = missing_only(document, stored, held)
            since = datetime.now(UTC) - timedelta(seconds=window_s)
            known = await job_store.known_scripts(conn, since)
            problems = script_problems(document, stored, known)
            if problems:
                raise _refused(origin, problems)
            for key in SETTINGS_KEYS:
                value = getattr(document.settings, key)
                if value is not None:
                    await settings.save(conn, key, value)
                    changed.append(key)
            interval = (await settings.load(conn, "queue", settings.QueueSettings)).interval_s
            for spec in document.jobs:
                # `paused` is not part of a stored job: it pauses or resumes through the ledger.
                if stored.get(spec.name) == spec.model_copy(update={"paused": None}):
                    unchanged += 1
                    job_id = await job_store.id_named(conn, spec.name)
                else:
                    job_id, was_created = await job_store.upsert(conn, spec)
                    created += was_created
                    updated += not was_created
                if spec.paused is not None and job_id is not None:
                    outbox.extend(
                        await job_store.set_paused(
                            conn, job_id, spec.paused, actor="apply", interval_s=interval, now=now
                        )
                    )
            if prune:
                deleted = await job_store.delete_named(
                    conn, [name for name in stored if name not in wanted]
                )
    finally:
        await engine.dispose()
    connection = await connect(app_settings.amqp_url, name="jobmanager-apply")
    try:
        topology = Topology.from_settings(app_settings)
        await topology.declare(await connection.channel())
        publisher = await Publisher.open(connection, topology)
        await outbox.publish(publisher, now=now)
        await publisher.broadcast_change("jobs")
    finally:
        await connection.close()
    report = (
        f"jobs: {created} created, {updated} updated, {unchanged} unchanged, {deleted} deleted; "
        f"settings: {', '.join(changed) or 'unchanged'}"
    )
    return f"{report}; kept as they were: {', '.join(kept)}" if kept else report


async def apply_file(path: Path, *, prune: bool) -> str:
    document = load_document(path.read_text(encoding="utf-8"), origin=str(path))
    app_settings = load_settings(AdminSettings, "apply")
    return await apply_document(
        document,
        app_settings,
        prune=prune,
        window_s=app_settings.executor_report_window_s,
        origin=str(path),
    )

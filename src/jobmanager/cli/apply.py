"""`jobmanager apply FILE`: declarative settings and jobs from YAML.

The whole file is validated before anything is written, and everything is written in one
transaction; then the running matchers are told to reload. Applying the same file twice
changes nothing the second time.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from jobmanager.core.broker import Publisher, connect
from jobmanager.core.config import DatabaseSettings
from jobmanager.core.topology import Topology
from jobmanager.jobs.spec import JobSpec
from jobmanager.store import db, settings
from jobmanager.store import jobs as job_store
from jobmanager.store.settings import CleanupSettings, QueueSettings, RetentionSettings


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
        seen: set[str] = set()
        for job in self.jobs:
            if job.name in seen:
                raise ValueError(f"job {job.name!r} appears twice")
            seen.add(job.name)
        return self


def load_document(text: str, *, origin: str = "<file>") -> ApplyDocument:
    """Parse and validate an apply file (pure)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ApplyError(f"{origin}: not valid YAML: {exc}") from None
    try:
        return ApplyDocument.model_validate(raw or {})
    except ValidationError as exc:
        lines = [f"{origin}: {exc.error_count()} problem(s)"]
        for error in exc.errors()[:20]:
            where = ".".join(str(part) for part in error["loc"])
            lines.append(f"  {where}: {error['msg']}")
        raise ApplyError("\n".join(lines)) from None


async def apply_document(
    document: ApplyDocument, app_settings: DatabaseSettings, *, prune: bool
) -> str:
    await db.check(app_settings.database_url)
    engine = db.create_engine(app_settings.database_url, pool_size=1)
    created = updated = unchanged = deleted = 0
    changed = []
    try:
        async with engine.begin() as conn:
            for key in ("queue", "executed_cleanup", "failed_cleanup", "retention"):
                value = getattr(document.settings, key)
                if value is not None:
                    await settings.save(conn, key, value)
                    changed.append(key)
            stored = {row.name: job_store.to_spec(row) for row in await job_store.all_jobs(conn)}
            for spec in document.jobs:
                if stored.get(spec.name) == spec:
                    unchanged += 1
                    continue
                _, was_created = await job_store.upsert(conn, spec)
                created += was_created
                updated += not was_created
            if prune:
                keep = {spec.name for spec in document.jobs}
                deleted = await job_store.delete_named(conn, [n for n in stored if n not in keep])
    finally:
        await engine.dispose()
    connection = await connect(app_settings.amqp_url, name="jobmanager-apply")
    try:
        topology = Topology.from_settings(app_settings)
        await topology.declare(await connection.channel())
        publisher = await Publisher.open(connection, topology)
        await publisher.broadcast_change("jobs")
    finally:
        await connection.close()
    return (
        f"jobs: {created} created, {updated} updated, {unchanged} unchanged, {deleted} deleted; "
        f"settings: {', '.join(changed) or 'unchanged'}"
    )


async def apply_file(path: Path, *, prune: bool) -> str:
    document = load_document(path.read_text(encoding="utf-8"), origin=str(path))
    return await apply_document(document, DatabaseSettings(), prune=prune)

"""The job catalogue in memory: jobs indexed for matching, templates compiled, settings.

Loaded from Postgres at start, on every control broadcast and periodically; matching an event
then touches no database.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jinja2 import Template
from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.messages import Event
from jobmanager.jobs.matching import JobIndex
from jobmanager.jobs.spec import PlannedRun
from jobmanager.jobs.templating import TemplateError, compile_template, render_command, render_lane
from jobmanager.store import jobs as job_store
from jobmanager.store import settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompiledJob:
    id: int
    name: str
    script: str
    command: Template
    lane: Template | None
    timeout_s: float
    max_attempts: int
    retry_backoff_s: float
    debounce_s: float = 0.0
    debounce_max_s: float | None = None


@dataclass(frozen=True)
class Catalogue:
    index: JobIndex[CompiledJob]
    interval_s: float

    @classmethod
    async def load(cls, engine: AsyncEngine) -> Catalogue:
        async with engine.connect() as conn:
            rows = await job_store.all_jobs(conn)
            queue = await settings.load(conn, "queue", settings.QueueSettings)
        entries = []
        for row in rows:
            if not row.enabled:
                continue
            try:
                spec = job_store.to_spec(row)
                compiled = CompiledJob(
                    id=row.id,
                    name=spec.name,
                    script=spec.script,
                    command=compile_template(spec.command_template),
                    lane=compile_template(spec.lane) if spec.lane is not None else None,
                    timeout_s=spec.timeout_s,
                    max_attempts=spec.max_attempts,
                    retry_backoff_s=spec.retry_backoff_s,
                    debounce_s=spec.debounce_s,
                    debounce_max_s=spec.debounce_max_s,
                )
            except ValueError as exc:  # stored before a validation rule existed
                log.error("job %r is invalid and will not match: %s", row.name, exc)
                continue
            entries.append((spec.trigger, compiled))
        return cls(JobIndex(entries), queue.interval_s)

    def plan(self, event: Event) -> list[PlannedRun]:
        """The runs an event causes: one per matching enabled job. A job whose templates
        fail for this event still gets a run, recorded as Failed with the error."""
        document = event.document()
        planned = []
        for job in self.index.match(document):
            error, command, lane = None, "", None
            try:
                command = render_command(job.command, document)
                lane = render_lane(job.lane, document)
            except TemplateError as exc:
                error = f"could not prepare the run: {exc}"
            planned.append(
                PlannedRun(
                    job_id=job.id,
                    job_name=job.name,
                    script=job.script,
                    command=command,
                    lane=lane,
                    timeout_s=job.timeout_s,
                    max_attempts=job.max_attempts,
                    retry_backoff_s=job.retry_backoff_s,
                    debounce_s=job.debounce_s,
                    debounce_max_s=job.debounce_max_s,
                    error=error,
                )
            )
        return planned

"""The job catalogue in memory: jobs indexed for matching, templates compiled, settings.

Loaded from Postgres at start, on every control broadcast and periodically; matching an event
then touches no database. Templates are compiled here only to refuse invalid ones; they are
rendered by the render pool's workers, within its limits (`jobmanager.jobs.renderer`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.messages import Event
from jobmanager.jobs.matching import JobIndex
from jobmanager.jobs.renderer import Crashed, Rendered, RenderPool, Templates
from jobmanager.jobs.spec import PlannedRun
from jobmanager.jobs.templating import compile_template
from jobmanager.store import jobs as job_store
from jobmanager.store import settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompiledJob:
    id: int
    name: str
    script: str
    templates: Templates
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
                for source in (spec.command_template, spec.lane):
                    if source is not None:
                        compile_template(source)
                compiled = CompiledJob(
                    id=row.id,
                    name=spec.name,
                    script=spec.script,
                    templates=Templates(spec.command_template, spec.lane),
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

    async def plan(
        self, events: Sequence[Event], renderer: RenderPool
    ) -> list[list[PlannedRun] | Crashed]:
        """The runs each event causes: one per matching enabled job, its templates rendered
        by `renderer` (all of the batch in one call). A job whose templates fail for an event
        (an error, a limit) still gets a run, recorded as Failed with the error; an event
        whose rendering crashed the renderer every time is Crashed, for the caller to park."""
        documents = [event.document() for event in events]
        matched = [self.index.match(document) for document in documents]
        outcomes = await renderer.render(
            [
                (doc, [job.templates for job in jobs])
                for doc, jobs in zip(documents, matched, strict=True)
            ]
        )
        return [
            outcome
            if isinstance(outcome, Crashed)
            else [_planned(job, rendered) for job, rendered in zip(jobs, outcome, strict=True)]
            for jobs, outcome in zip(matched, outcomes, strict=True)
        ]


def _planned(job: CompiledJob, rendered: Rendered) -> PlannedRun:
    error = None if rendered.error is None else f"could not prepare the run: {rendered.error}"
    return PlannedRun(
        job_id=job.id,
        job_name=job.name,
        script=job.script,
        command=rendered.command,  # as rendered before the lane failed, if it did
        lane=rendered.lane,
        timeout_s=job.timeout_s,
        max_attempts=job.max_attempts,
        retry_backoff_s=job.retry_backoff_s,
        debounce_s=job.debounce_s,
        debounce_max_s=job.debounce_max_s,
        error=error,
    )

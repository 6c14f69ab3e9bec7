"""The job catalogue in memory: jobs indexed for matching (their triggers, and their
`cancel_on` triggers), templates compiled, settings.

Loaded from Postgres at start, on every control broadcast and periodically; matching an event
then touches no database. Templates are compiled here only to refuse invalid ones; they are
rendered by the render pool's workers, within its limits (`jobmanager.jobs.renderer`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from jobmanager.core.logs import Throttled
from jobmanager.core.messages import Event
from jobmanager.jobs.matching import JobIndex
from jobmanager.jobs.planning import planned_run
from jobmanager.jobs.renderer import Crashed, Rendered, RenderPool, Templates
from jobmanager.jobs.spec import PlannedCancel, PlannedRun, Trigger
from jobmanager.jobs.templating import compile_template
from jobmanager.store import jobs as job_store
from jobmanager.store import settings

log = logging.getLogger(__name__)
# A job whose lane fails for its cancel events would say so on every one of them.
_cancel_failed = Throttled(log, every_s=60)


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
class Cancelling:
    """A job's `cancel_on` entry: its events end the job's runs in their lane."""

    job: CompiledJob
    running: bool


@dataclass(frozen=True)
class Plan:
    """What an event does: the runs it causes and the runs it cancels."""

    runs: list[PlannedRun]
    cancels: list[PlannedCancel] = field(default_factory=list)


def _no_cancels() -> JobIndex[Cancelling]:
    return JobIndex([])


@dataclass(frozen=True)
class Catalogue:
    index: JobIndex[CompiledJob]
    interval_s: float
    cancel_index: JobIndex[Cancelling] = field(default_factory=_no_cancels)

    @classmethod
    async def load(cls, engine: AsyncEngine) -> Catalogue:
        async with engine.connect() as conn:
            rows = await job_store.all_jobs(conn)
            queue = await settings.load(conn, "queue", settings.QueueSettings)
        entries = []
        cancels: list[tuple[Trigger, Cancelling]] = []
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
            cancels += [(entry, Cancelling(compiled, entry.running)) for entry in spec.cancel_on]
        return cls(JobIndex(entries), queue.interval_s, JobIndex(cancels))

    async def plan(self, events: Sequence[Event], renderer: RenderPool) -> list[Plan | Crashed]:
        """What each event does: one run per matching enabled job and one cancel per matching
        `cancel_on` entry, their templates rendered by `renderer` (all of the batch in one
        call; a cancel renders its job's lane only). A job whose templates fail for an event
        (an error, a limit) still gets a run, recorded as Failed with the error; a cancel whose
        lane fails cancels nothing, and says so in the log. An event whose rendering crashed
        the renderer every time is Crashed, for the caller to park."""
        documents = [event.document() for event in events]
        matched = [self.index.match(document) for document in documents]
        ending = [self.cancel_index.match(document) for document in documents]
        outcomes = await renderer.render(
            [
                (
                    doc,
                    [job.templates for job in jobs]
                    + [Templates("", c.job.templates.lane) for c in cancels],
                )
                for doc, jobs, cancels in zip(documents, matched, ending, strict=True)
            ]
        )
        plans: list[Plan | Crashed] = []
        for event, jobs, cancels, outcome in zip(events, matched, ending, outcomes, strict=True):
            if isinstance(outcome, Crashed):
                plans.append(outcome)
                continue
            runs = [
                planned_run(job.id, job, rendered)
                for job, rendered in zip(jobs, outcome[: len(jobs)], strict=True)
            ]
            plans.append(Plan(runs, _cancels(event, cancels, outcome[len(jobs) :])))
        return plans


def _cancels(
    event: Event, cancels: Sequence[Cancelling], rendered: Sequence[Rendered]
) -> list[PlannedCancel]:
    planned = []
    for cancel, lane in zip(cancels, rendered, strict=True):
        if lane.error is not None or lane.lane is None:
            _cancel_failed.warning(
                f"cancel_on:{cancel.job.id}",
                "event %s matches a cancel_on of job %r, but its lane could not be rendered "
                "(%s): nothing cancelled",
                event.event_id,
                cancel.job.name,
                lane.error,
            )
            continue
        planned.append(PlannedCancel(cancel.job.id, lane.lane, cancel.running))
    return planned

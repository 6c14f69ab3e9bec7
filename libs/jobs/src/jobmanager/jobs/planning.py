"""A job's run for an event, from the job and its rendered templates: the one place that
turns a render into a `PlannedRun` (the matcher's events and the admin's replay)."""

from __future__ import annotations

from typing import Protocol

from jobmanager.jobs.renderer import Rendered
from jobmanager.jobs.spec import PlannedRun


class RunLimits(Protocol):
    """What a run takes from its job (a `JobSpec`, the matcher's compiled job)."""

    @property
    def name(self) -> str: ...
    @property
    def script(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def retry_backoff_s(self) -> float: ...
    @property
    def debounce_s(self) -> float: ...
    @property
    def debounce_max_s(self) -> float | None: ...


def planned_run(job_id: int, job: RunLimits, rendered: Rendered) -> PlannedRun:
    """The run; a render that failed (an error, a limit) makes a run recorded as Failed with
    the error as its Feedback, never a lost one."""
    error = None if rendered.error is None else f"could not prepare the run: {rendered.error}"
    return PlannedRun(
        job_id=job_id,
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

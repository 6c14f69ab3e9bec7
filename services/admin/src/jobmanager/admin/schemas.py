"""Request and response bodies of the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobmanager.jobs.spec import CancelTrigger, JobSpec, Trigger, json_problem

T = TypeVar("T")


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None,
        description=(
            "for invalid input: each field's problem: `loc`, `msg` and `type` as pydantic"
            " gives them, and `message` in words"
        ),
    )


class Page(Out, Generic[T]):
    """One page of a list, newest first; pass `next_cursor` as `cursor` for the next."""

    items: list[T]
    next_cursor: str | None


class RunOut(Out):
    id: int
    job: str
    job_id: int | None
    script: str
    lane: str | None
    command: str
    state: Literal[
        "queued", "dispatched", "running", "succeeded", "failed", "removed", "superseded"
    ]
    attempt: int
    max_attempts: int
    enqueued_at: datetime
    not_before: datetime | None
    execute_now: bool
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    result: Literal[2, 3] | None
    feedback: str
    event_id: str | None
    executor: str | None
    absorbed: int = Field(0, description="earlier events of its burst it replaced (debounce)")
    superseded_by: int | None = Field(None, description="the run that replaced it (debounce)")
    held: bool = Field(False, description="waiting for a slot of its job's concurrency limit")


class AttemptOut(Out):
    attempt: int
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    result: Literal[2, 3] | None
    feedback: str
    executor: str | None
    output_tail: str


class EndedBy(Out):
    """The event that removed or cancelled a run (its job's `cancel_on`)."""

    id: int = Field(description="the recorded event's key")
    event_id: str | None = Field(description="null once the event has expired")
    event_type: str | None


class RunDetail(RunOut):
    output_tail: str
    attempts: list[AttemptOut]
    event: dict[str, Any] | None
    absorbed_events: list[str] = Field(
        default_factory=list, description="ids of the earlier events of its burst (debounce)"
    )
    ended_by_event: EndedBy | None = Field(
        None, description="the event that removed or cancelled it (cancel_on)"
    )


class JobOut(JobSpec):
    id: int
    paused: bool = False  # as stored (in a JobSpec, None means "leave it as it is")
    paused_at: datetime | None = None
    paused_reason: str | None = None
    created_at: datetime
    updated_at: datetime


class JobPatch(BaseModel):
    """Fields to change; the rest stay as they are. The result is validated as a whole."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    enabled: bool | None = None
    trigger: Trigger | None = None
    script: str | None = None
    command_template: str | None = None
    lane: str | None = Field(default=None, description="null in the body means no lane")
    timeout_s: float | None = None
    max_attempts: int | None = None
    retry_backoff_s: float | None = None
    cancel_grace_s: float | None = None
    paused: bool | None = None
    pause_after_failures: int | None = None
    max_concurrency: int | None = None
    debounce_s: float | None = None
    debounce_max_s: float | None = None
    cancel_on: list[CancelTrigger] | None = None


class DryRunIn(BaseModel):
    """The event to test against: given whole, by its id, or (neither) the latest one."""

    model_config = ConfigDict(extra="forbid")

    event: dict[str, Any] | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("event")
    @classmethod
    def _acceptable(cls, event: dict[str, Any] | None) -> dict[str, Any] | None:
        # What the matcher would park (a NUL, an unpaired surrogate, a number that is not
        # finite, nesting past 64 levels) is refused here too, with the same reason.
        if event is not None and (problem := json_problem(event)) is not None:
            raise ValueError(problem)
        return event


class CheckOut(BaseModel):
    path: str
    op: str
    value: Any = None
    passed: bool
    reason: str


class DryRunOut(BaseModel):
    matched: bool
    event_type_ok: bool
    event_type_reason: str
    checks: list[CheckOut]
    command: str | None
    lane: str | None
    error: str | None
    event: dict[str, Any]


class EventRun(Out):
    id: int
    job: str
    state: str


class EventOut(Out):
    id: int
    event_id: str
    event_type: str
    source: str
    occurred_at: datetime | None
    received_at: datetime
    matched: int
    data: dict[str, Any]
    runs: list[EventRun]


class AuditOut(Out):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # No control characters: a name is shown in the audit log and the console.
    name: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: Literal["viewer", "operator", "admin"]


class KeyOut(Out):
    id: int
    name: str
    prefix: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="shown once; only its hash is stored")


class ScriptOut(BaseModel):
    name: str
    executors: list[str]


class ExecutorOut(Out):
    id: str
    scripts: list[str]
    concurrency: int
    busy: int
    started_at: datetime | None
    last_seen_at: datetime


class StatsOut(BaseModel):
    jobs: int
    queue: int
    executed: int
    failed: int
    lanes_busy: int
    lanes_waiting: int
    executors: int
    dead_letters: int | None = Field(description="null when the broker is not reachable")

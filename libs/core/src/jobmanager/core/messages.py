"""The AMQP contract: every message Job Manager sends or receives, as pydantic models.

These models are the contract with the Channel Manager, with executors written in any
language, and with subscribers of the results and runs exchanges. The AsyncAPI document is
generated from them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

MAX_ID = 200
# What the ledger keeps of a result, whatever an executor sends: the feedback's beginning and
# the output's end, each cut to this many characters with the cut marked.
MAX_FEEDBACK = 65_536
MAX_OUTPUT_TAIL = 65_536
# The largest message the matcher reads from the results queue: an honest result within the
# bounds above is far smaller, even with every character escaped.
MAX_RESULT_BYTES = 1 << 20
# Room kept for the marker, "[… N characters omitted]" with its line break.
_MARKER_ROOM = 48


def _storable(text: str) -> str:
    # Postgres text holds neither a NUL character nor an unpaired surrogate; a script that
    # prints one (binary output, say) must not make its result unrecordable. Both become
    # U+FFFD, the replacement character.
    text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _omitted(count: int) -> str:
    return f"[… {count} characters omitted]"


def keep_beginning(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its beginning and a marker of the cut."""
    if len(text) <= limit:
        return text
    kept = text[: max(0, limit - _MARKER_ROOM)]
    return f"{kept}\n{_omitted(len(text) - len(kept))}"


def keep_end(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else a marker of the cut and its end."""
    if len(text) <= limit:
        return text
    kept = text[len(text) - max(0, limit - _MARKER_ROOM) :]
    return f"{_omitted(len(text) - len(kept))}\n{kept}"


def _aware(moment: datetime) -> datetime:
    # A time without an offset is taken as UTC, whichever path stores or compares it.
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    try:
        # The ledger stores times in UTC: one that has no UTC form (9999-12-31T23:59-23:59)
        # is refused here, with the reason, instead of failing its whole batch in the database.
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("a time outside the years 1 to 9999 in UTC") from None
    return moment


# Text an executor reports that the ledger stores.
ReportedText = Annotated[str, AfterValidator(_storable)]
Feedback = Annotated[ReportedText, AfterValidator(lambda text: keep_beginning(text, MAX_FEEDBACK))]
OutputTail = Annotated[ReportedText, AfterValidator(lambda text: keep_end(text, MAX_OUTPUT_TAIL))]
# A time another system sends: with an offset, or UTC.
Timestamp = Annotated[datetime, AfterValidator(_aware)]


class ResultCode(IntEnum):
    """A script's outcome, numbered as in the original connector."""

    FAILED = 2
    SUCCEEDED = 3


# The `status` a result's code goes with (and its routing key, `run.<status>`).
_STATUS: dict[int, str] = {ResultCode.FAILED: "failed", ResultCode.SUCCEEDED: "succeeded"}


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Event(Message):
    """One Channel Manager notification."""

    event_id: str = Field(min_length=1, max_length=MAX_ID)
    event_type: str = Field(min_length=1, max_length=MAX_ID)
    source: str = Field(default="channel-manager", min_length=1, max_length=MAX_ID)
    occurred_at: Timestamp | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        """The event as the JSON object that triggers and templates see."""
        return self.model_dump(mode="json")


class JobRef(Message):
    id: int | None
    name: str


class JobRequest(Message):
    """A request to run one attempt of a run (delay stage, due queue and work queue).

    `token` identifies one scheduling of the run: the gate drops a request whose token is no
    longer the run's current one (it was rescheduled, executed now or removed meanwhile).
    `event` is filled in only on the work queue, for executables that read it on stdin.
    """

    run_id: int
    attempt: int = Field(ge=1)
    token: int = 0
    job: JobRef
    script: str
    command: str
    timeout_s: float = Field(gt=0)
    lane: str | None
    event_id: str | None = None
    not_before: datetime
    requested_at: datetime
    event: dict[str, Any] | None = None


class RunStarted(Message):
    """Published by an executor on `run.started` when the script begins."""

    run_id: int
    attempt: int
    executor: ReportedText = Field(max_length=MAX_ID)
    started_at: Timestamp


class JobResult(Message):
    """Published by an executor on `run.succeeded` or `run.failed`."""

    run_id: int
    attempt: int
    result: Literal[2, 3]
    status: Literal["succeeded", "failed"]
    feedback: Feedback = Field(
        default="", description=f"at most {MAX_FEEDBACK} characters are kept: the beginning"
    )
    started_at: Timestamp
    finished_at: Timestamp
    executor: ReportedText = Field(max_length=MAX_ID)
    output_tail: OutputTail = Field(
        default="", description=f"at most {MAX_OUTPUT_TAIL} characters are kept: the end"
    )

    @model_validator(mode="after")
    def _consistent(self) -> JobResult:
        # `result` decides the outcome; a `status` that says otherwise is a broken executor.
        if self.status != _STATUS[self.result]:
            raise ValueError(f"result {self.result} contradicts status {self.status!r}")
        return self

    @property
    def routing_key(self) -> str:
        return f"run.{self.status}"


class ExecutorReport(Message):
    """Published by each executor on `executor.report` at start and then periodically: the
    scripts it can run (the catalogue the admin API checks jobs against) and its load."""

    executor: str = Field(min_length=1, max_length=MAX_ID)
    scripts: list[str]
    concurrency: int = Field(ge=0)
    busy: int = Field(ge=0)
    started_at: Timestamp
    at: Timestamp

    routing_key: ClassVar[str] = "executor.report"


RunState = Literal[
    "queued", "dispatched", "running", "succeeded", "failed", "removed", "superseded"
]


# The runs exchange's routing key per state a notice announces (the specification's names:
# a run that became `running` is announced as `run.started`). No notice announces `dispatched`.
NOTICE_KEYS: dict[str, str] = {
    "queued": "run.queued",
    "running": "run.started",
    "succeeded": "run.succeeded",
    "failed": "run.failed",
    "removed": "run.removed",
    "superseded": "run.superseded",
}


class RunNotice(Message):
    """Published on the runs exchange for integrations: `run.queued`, `run.started` (the
    run is running), `run.succeeded`, `run.failed`, `run.removed`."""

    run_id: int
    state: RunState
    attempt: int
    job: str
    lane: str | None
    event_id: str | None
    result: int | None = None
    feedback: str = ""
    at: datetime

    @property
    def routing_key(self) -> str:
        return NOTICE_KEYS.get(self.state, f"run.{self.state}")


class JobNotice(Message):
    """Published on the runs exchange when a job is paused (by an operator, an apply file or
    the circuit breaker) or resumed: `job.paused`, `job.resumed`."""

    job_id: int
    job: str
    state: Literal["paused", "resumed"]
    reason: str | None = None
    at: datetime

    @property
    def routing_key(self) -> str:
        return f"job.{self.state}"


class ControlMessage(Message):
    """Broadcast to every matcher when jobs or settings change."""

    kind: Literal["jobs", "settings"]
    at: datetime


class CancelRequest(Message):
    """Broadcast to every executor on the executors' control exchange when an operator
    cancels a dispatched or running run (the ledger has already ended it as Failed).

    An executor running attempt `attempt` of run `run_id` sends SIGTERM to the script's
    process group, and SIGKILL to what is left of it `grace_s` seconds later; it may then
    publish the attempt's `run.failed` (only its Feedback and output are recorded). An
    executor that is handed that attempt's request later acks it without running it. An
    executor that holds neither ignores the message. It may arrive more than once (it is
    sent again when a cancelled attempt reports a start).
    """

    run_id: int
    attempt: int = Field(ge=1)
    by: str = Field(max_length=MAX_ID)
    grace_s: float = Field(ge=0)
    at: Timestamp

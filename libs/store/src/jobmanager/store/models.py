"""SQLAlchemy models: jobs, events, runs with their attempts, lanes and settings.

Only the ledger changes a run's state; everything else reads these tables.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

RUN_STATES = ("queued", "dispatched", "running", "succeeded", "failed", "removed", "superseded")
QUEUE_STATES = ("queued", "dispatched", "running")
ACTIVE_STATES = ("dispatched", "running")

NAME = 200


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
    }


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Outcome:
    """Columns of an execution's course, kept for the run (its latest attempt) and for each
    attempt."""

    dispatched_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    result: Mapped[int | None] = mapped_column(SmallInteger)
    feedback: Mapped[str] = mapped_column(Text, server_default="")
    executor: Mapped[str | None] = mapped_column(String(NAME))
    output_tail: Mapped[str] = mapped_column(Text, server_default="")


class Job(Base):
    """A registered rule: trigger + script + command template + lane + limits."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME), unique=True)
    description: Mapped[str] = mapped_column(Text, server_default="")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    event_type: Mapped[str] = mapped_column(String(NAME))
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    script: Mapped[str] = mapped_column(String(100))
    command_template: Mapped[str] = mapped_column(Text)
    lane: Mapped[str | None] = mapped_column(Text)
    timeout_s: Mapped[float] = mapped_column(Float, server_default="600")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="1")
    retry_backoff_s: Mapped[float] = mapped_column(Float, server_default="0")
    # Read when a run is cancelled (not snapshotted: the grace is the operator's intent now).
    cancel_grace_s: Mapped[float] = mapped_column(Float, server_default="10")
    # Flow control (SPEC §12): a paused job's runs wait, queued; the breaker pauses a job
    # after `pause_after_failures` final failures in a row (`failure_streak` counts them);
    # at most `max_concurrency` of its runs are dispatched or running at once.
    paused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    paused_at: Mapped[datetime | None]
    paused_reason: Mapped[str | None] = mapped_column(Text)
    pause_after_failures: Mapped[int | None] = mapped_column(Integer)
    failure_streak: Mapped[int] = mapped_column(Integer, server_default="0")
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    # Debounce: a burst of events for one lane becomes one run (see the runs' columns).
    debounce_s: Mapped[float] = mapped_column(Float, server_default="0")
    debounce_max_s: Mapped[float | None] = mapped_column(Float)
    # Cancel on a later event: triggers (with `scope` and `running`) that end its runs.
    cancel_on: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class Event(Base):
    """A received Channel Manager notification, kept for a retention period."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("source", "event_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    source: Mapped[str] = mapped_column(String(NAME))
    event_id: Mapped[str] = mapped_column(String(NAME))
    event_type: Mapped[str] = mapped_column(String(NAME))
    occurred_at: Mapped[datetime | None]
    received_at: Mapped[datetime] = mapped_column(index=True, server_default=func.now())
    payload: Mapped[dict[str, Any]]
    matched: Mapped[int] = mapped_column(Integer, server_default="0")


class Run(Outcome, Base):
    """One execution request of one job, caused by one event (or an operator).

    Job name and script are snapshots, so editing or deleting a job leaves history intact.
    """

    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(f"state IN {RUN_STATES!r}", name="state"),
        CheckConstraint("result IS NULL OR result IN (2, 3)", name="result"),
        # The next run of a lane: queued, execute-now first, then lane order (`place`: the
        # enqueue order, which a debounced run takes over from the run it supersedes).
        Index(
            "ix_runs_lane_next",
            "lane",
            text("execute_now_at ASC NULLS LAST"),
            text("coalesce(place, id)"),
            postgresql_where=text("state = 'queued'"),
        ),
        Index("ix_runs_state_id", "state", "id"),
        # The Queue page, newest first, and the Executed / Failed pages by finish time
        # (their keyset pagination and Auto Cleanup's "oldest rows").
        Index("ix_runs_queue", "id", postgresql_where=text(f"state IN {QUEUE_STATES!r}")),
        Index(
            "ix_runs_executed",
            "finished_at",
            "id",
            postgresql_where=text("state = 'succeeded'"),
        ),
        Index("ix_runs_failed", "finished_at", "id", postgresql_where=text("state = 'failed'")),
        # One run per event and job, ever: a replay of past events skips those that have one
        # (runs of a deleted job, job_id null, never collide). Also the runs of an event.
        Index("ix_runs_event_job", "event_pk", "job_id", unique=True),
        # A debounced run's lineage: the runs it superseded.
        Index(
            "ix_runs_superseded_by",
            "superseded_by",
            postgresql_where=text("superseded_by IS NOT NULL"),
        ),
        # The runs a concurrency limit holds, per job, oldest first.
        Index(
            "ix_runs_held",
            "job_id",
            "id",
            postgresql_where=text("held_at IS NOT NULL AND state = 'queued'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    job_name: Mapped[str] = mapped_column(String(NAME))
    script: Mapped[str] = mapped_column(String(100))
    command: Mapped[str] = mapped_column(Text)
    lane: Mapped[str | None] = mapped_column(String(NAME))
    event_pk: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    event_id: Mapped[str | None] = mapped_column(String(NAME))
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, server_default="1")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="1")
    retry_backoff_s: Mapped[float] = mapped_column(Float, server_default="0")
    timeout_s: Mapped[float] = mapped_column(Float, server_default="600")
    token: Mapped[int] = mapped_column(Integer, server_default="0")
    execute_now_at: Mapped[datetime | None]
    enqueued_at: Mapped[datetime] = _now()
    not_before: Mapped[datetime | None]
    # Since when its lane's head waits for a slot of its job's concurrency limit.
    held_at: Mapped[datetime | None]
    # Debounce: the run it superseded handed it its place in the lane (`place`, else its id
    # is its place), its burst's start and the number of events it absorbed; it starts no
    # earlier than `debounce_until`. A superseded run names the run that replaced it.
    place: Mapped[int | None] = mapped_column(BigInteger)
    burst_started_at: Mapped[datetime | None]
    debounce_until: Mapped[datetime | None]
    absorbed: Mapped[int] = mapped_column(Integer, server_default="0")
    superseded_by: Mapped[int | None] = mapped_column(BigInteger)
    # The event that removed or cancelled it (a job's `cancel_on`). No foreign key: events
    # expire, and the run still says which one it was by its id.
    ended_by_event_pk: Mapped[int | None] = mapped_column(BigInteger)


class Attempt(Outcome, Base):
    """One attempt of a run; a run's history. The key makes a duplicate result a no-op."""

    __tablename__ = "attempts"
    # The cancels the upkeep may have to send again (`ledger_unanswered_cancels`).
    __table_args__ = (
        Index(
            "ix_attempts_cancelled",
            "finished_at",
            postgresql_where=text("cancelled_by IS NOT NULL"),
        ),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Who cancelled it (`ledger_cancel`): a start reported later has the cancel sent again,
    # and a result reported later only completes its Feedback.
    cancelled_by: Mapped[str | None] = mapped_column(String(NAME))


class Lane(Base):
    """A sequencing key. `head_run_id` is the run that owns the lane now: scheduled
    (queued, its request in the broker) or active (dispatched or running)."""

    __tablename__ = "lanes"
    # Deleting a run checks this foreign key (ON DELETE SET NULL): without the index, every
    # deleted run would scan all lanes.
    __table_args__ = (
        Index(
            "ix_lanes_head_run_id",
            "head_run_id",
            postgresql_where=text("head_run_id IS NOT NULL"),
        ),
    )

    name: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    head_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    last_finished_at: Mapped[datetime | None]


class ApiKey(Base):
    """An admin API key. Only a hash of the key is stored; `prefix` identifies it to people.
    The name is unique (revoked keys included), so that an audit record's actor names one key."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = _now()
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),)


class AuditEntry(Base):
    """One mutating call of the admin API: who, what, on what, when, and how it ended."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(index=True, server_default=func.now())
    actor: Mapped[str] = mapped_column(String(NAME))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(NAME))
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")


class Executor(Base):
    """What an executor last reported about itself: its scripts and capacity."""

    __tablename__ = "executors"

    id: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    scripts: Mapped[list[str]] = mapped_column(JSONB, server_default="[]")
    concurrency: Mapped[int] = mapped_column(Integer, server_default="0")
    busy: Mapped[int] = mapped_column(Integer, server_default="0")
    started_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime] = mapped_column(index=True, server_default=func.now())


class Setting(Base):
    """Operator settings (queue interval, Auto Cleanup), one JSON document per key."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = _now()

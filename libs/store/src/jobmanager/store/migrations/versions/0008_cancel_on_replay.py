"""cancel on a later event, and replay: one run per event and job

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 23:20:00.000000

Adds the jobs' `cancel_on` (triggers whose events end the job's waiting runs in the event's
lane) and the runs' `ended_by_event_pk` (the event that did). The runs' index on `event_pk`
becomes unique over (event_pk, job_id): an event makes at most one run of a job, which is
what lets a replay of past events skip those that already have one. The cancelled attempts
get an index of their own, for the upkeep's look for cancels to send again. The ledger's functions
are dropped first and installed again at the head revision (`migrations/env.py`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from jobmanager.store import functions

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    functions.drop(op.get_bind())
    op.add_column(
        "jobs",
        sa.Column("cancel_on", postgresql.JSONB(), server_default="[]", nullable=False),
    )
    op.add_column("runs", sa.Column("ended_by_event_pk", sa.BigInteger()))
    op.create_index("ix_runs_event_job", "runs", ["event_pk", "job_id"], unique=True)
    op.drop_index("ix_runs_event_pk", table_name="runs")
    op.create_index(
        "ix_attempts_cancelled",
        "attempts",
        ["finished_at"],
        postgresql_where=sa.text("cancelled_by IS NOT NULL"),
    )


def downgrade() -> None:
    functions.drop(op.get_bind())
    op.drop_index("ix_attempts_cancelled", table_name="attempts")
    op.create_index("ix_runs_event_pk", "runs", ["event_pk"], unique=False)
    op.drop_index("ix_runs_event_job", table_name="runs")
    op.drop_column("runs", "ended_by_event_pk")
    op.drop_column("jobs", "cancel_on")

"""flow control: pause and resume, the circuit breaker, the concurrency limit

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 21:45:00.000000

The ledger's functions use these tables, so they are dropped first; the migration
environment installs `ledger.sql` again once the database is at the head revision.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from jobmanager.store import functions

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    functions.drop(op.get_bind())
    op.add_column(
        "jobs",
        sa.Column("paused", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("jobs", sa.Column("paused_at", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("paused_reason", sa.Text()))
    op.add_column("jobs", sa.Column("pause_after_failures", sa.Integer()))
    op.add_column(
        "jobs", sa.Column("failure_streak", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("jobs", sa.Column("max_concurrency", sa.Integer()))
    op.add_column("runs", sa.Column("held_at", sa.DateTime(timezone=True)))
    op.create_index(
        "ix_runs_held",
        "runs",
        ["job_id", "id"],
        postgresql_where=sa.text("held_at IS NOT NULL AND state = 'queued'"),
    )


def downgrade() -> None:
    functions.drop(op.get_bind())
    op.drop_index("ix_runs_held", table_name="runs")
    op.drop_column("runs", "held_at")
    for column in (
        "max_concurrency",
        "failure_streak",
        "pause_after_failures",
        "paused_reason",
        "paused_at",
        "paused",
    ):
        op.drop_column("jobs", column)

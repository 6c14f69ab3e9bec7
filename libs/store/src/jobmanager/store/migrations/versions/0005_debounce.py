"""debounce: a burst of events for one lane becomes one run

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 22:05:00.000000

Adds the `superseded` state, the jobs' debounce fields, the runs' lane place and burst
columns, and orders a lane's next run by its place. The ledger's functions are dropped
first and installed again at the head revision (`migrations/env.py`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from jobmanager.store import functions

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATES = "('queued', 'dispatched', 'running', 'succeeded', 'failed', 'removed'"


def _lane_next(place: bool) -> None:
    op.drop_index(
        "ix_runs_lane_next", table_name="runs", postgresql_where=sa.text("state = 'queued'")
    )
    op.create_index(
        "ix_runs_lane_next",
        "runs",
        [
            "lane",
            sa.text("execute_now_at ASC NULLS LAST"),
            sa.text("coalesce(place, id)" if place else "id"),
        ],
        postgresql_where=sa.text("state = 'queued'"),
    )


def upgrade() -> None:
    functions.drop(op.get_bind())
    op.add_column("jobs", sa.Column("debounce_s", sa.Float(), server_default="0", nullable=False))
    op.add_column("jobs", sa.Column("debounce_max_s", sa.Float()))
    op.add_column("runs", sa.Column("place", sa.BigInteger()))
    op.add_column("runs", sa.Column("burst_started_at", sa.DateTime(timezone=True)))
    op.add_column("runs", sa.Column("debounce_until", sa.DateTime(timezone=True)))
    op.add_column("runs", sa.Column("absorbed", sa.Integer(), server_default="0", nullable=False))
    op.add_column("runs", sa.Column("superseded_by", sa.BigInteger()))
    op.drop_constraint(op.f("ck_runs_state"), "runs", type_="check")
    op.create_check_constraint(op.f("ck_runs_state"), "runs", f"state IN {STATES}, 'superseded')")
    _lane_next(place=True)
    op.create_index(
        "ix_runs_superseded_by",
        "runs",
        ["superseded_by"],
        postgresql_where=sa.text("superseded_by IS NOT NULL"),
    )


def downgrade() -> None:
    functions.drop(op.get_bind())
    op.drop_index("ix_runs_superseded_by", table_name="runs")
    op.execute("DELETE FROM runs WHERE state = 'superseded'")
    _lane_next(place=False)
    op.drop_constraint(op.f("ck_runs_state"), "runs", type_="check")
    op.create_check_constraint(op.f("ck_runs_state"), "runs", f"state IN {STATES})")
    for column in ("superseded_by", "absorbed", "debounce_until", "burst_started_at", "place"):
        op.drop_column("runs", column)
    op.drop_column("jobs", "debounce_max_s")
    op.drop_column("jobs", "debounce_s")

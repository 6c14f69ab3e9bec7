"""cancel: a dispatched or running run can be cancelled

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 16:10:00.000000

Adds the jobs' `cancel_grace_s` (how long a cancelled script has between SIGTERM and
SIGKILL, 10 s by default) and the attempts' `cancelled_by` (who cancelled it; a start or a
result reported for it later is recognized by it). The ledger's functions are dropped first
and installed again at the head revision (`migrations/env.py`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from jobmanager.store import functions

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    functions.drop(op.get_bind())
    op.add_column(
        "jobs", sa.Column("cancel_grace_s", sa.Float(), server_default="10", nullable=False)
    )
    op.add_column("attempts", sa.Column("cancelled_by", sa.String(200)))


def downgrade() -> None:
    functions.drop(op.get_bind())
    op.drop_column("attempts", "cancelled_by")
    op.drop_column("jobs", "cancel_grace_s")

"""ledger functions: every rule of a run's life in the database, from `ledger.sql`

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 17:10:00.000000

The functions are not written here: `jobmanager.store.functions` installs `ledger.sql`, their
one source, after the migrations whenever the database is at the head revision and its copy
differs (`migrations/env.py`). This revision marks the schema that has them, so that a
service refuses a database without them (`check_schema`), and its downgrade drops them.
"""

from collections.abc import Sequence

from alembic import op

from jobmanager.store import functions

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # installed by the migration environment once at head (see the docstring)


def downgrade() -> None:
    functions.drop(op.get_bind())

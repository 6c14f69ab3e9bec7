"""api keys: unique names, so that an audit record's actor names one key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 21:50:00.000000

Keys made before this revision may share a name. The oldest keeps it; each other one gets
its id appended (`ops #7`), which is how `GET /api/v1/keys` and the audit log show it from
now on. Audit records written before keep the name they had.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE api_keys SET name = left(name, 180) || ' #' || id
        WHERE id NOT IN (SELECT min(id) FROM api_keys GROUP BY name)
        """
    )
    op.create_unique_constraint(op.f("uq_api_keys_name"), "api_keys", ["name"])


def downgrade() -> None:
    op.drop_constraint(op.f("uq_api_keys_name"), "api_keys", type_="unique")

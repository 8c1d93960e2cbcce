"""equipment.control_state: the SEMI E30 control state the tool's adapter last read

Revision ID: 1a7c3e5b9f02
Revises: 9d2f6b1e8c37
Create Date: 2026-12-04 03:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1a7c3e5b9f02"
down_revision: str | None = "9d2f6b1e8c37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("equipment") as batch:
        batch.add_column(sa.Column("control_state", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("equipment") as batch:
        batch.drop_column("control_state")

"""qtime minimum: a step may say how long a lot must wait, not only how long it may

Revision ID: 7c5e1f3a9d24
Revises: 6b4d2a8e0f13
Create Date: 2026-12-04 05:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import UTCDateTime

revision: str = "7c5e1f3a9d24"
down_revision: str | None = "6b4d2a8e0f13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("step") as batch:
        batch.add_column(sa.Column("qtime_min_s", sa.Integer(), nullable=True))
        batch.create_check_constraint(
            "qtime_min_range",
            "qtime_min_s IS NULL OR (qtime_max_s IS NOT NULL AND qtime_min_s >= 0"
            " AND qtime_min_s < qtime_max_s)",
        )
    with op.batch_alter_table("lot_qtime") as batch:
        batch.add_column(sa.Column("earliest_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lot_qtime") as batch:
        batch.drop_column("earliest_at")
    with op.batch_alter_table("step") as batch:
        batch.drop_constraint("qtime_min_range", type_="check")
        batch.drop_column("qtime_min_s")

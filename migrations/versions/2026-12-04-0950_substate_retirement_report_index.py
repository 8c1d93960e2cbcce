"""substate retirement (a retired E10 substate stays in history but cannot be entered); an index
of lot events by time for the morning reports

Revision ID: 3b7d1e5a9c42
Revises: 3b7d2e91c4a5
Create Date: 2026-12-04 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import UTCDateTime

revision: str = "3b7d1e5a9c42"
down_revision: str | None = "3b7d2e91c4a5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("equipment_substate") as batch:
        batch.add_column(sa.Column("retired_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("retired_by", sa.String(length=64), nullable=True))
    op.create_index("ix_lot_event_time", "lot_event", ["occurred_at"])


def downgrade() -> None:
    op.drop_index("ix_lot_event_time", table_name="lot_event")
    with op.batch_alter_table("equipment_substate") as batch:
        batch.drop_column("retired_by")
        batch.drop_column("retired_at")

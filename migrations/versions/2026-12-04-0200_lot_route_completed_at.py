"""lot.route_completed_at: a lot held when it tracked out of its last step waits there, OnHold,
and completes when its last hold is released

Revision ID: 3c1d7e9a2b40
Revises: 7b2e4c1d9a05
Create Date: 2026-12-04 02:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import UTCDateTime

revision: str = "3c1d7e9a2b40"
down_revision: str | None = "7b2e4c1d9a05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lot") as batch:
        batch.add_column(sa.Column("route_completed_at", UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("lot") as batch:
        batch.drop_column("route_completed_at")

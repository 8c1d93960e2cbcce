"""held material: lot.route_completed_at (a lot held when it tracked out of its last step waits
there, OnHold, and completes when its last hold is released) and the PARTIAL_RUN hold code (a lot
some of whose wafers the step did not process stays at the step)

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
    hold_code = sa.table(
        "hold_code",
        sa.column("code", sa.String),
        sa.column("description", sa.String),
        sa.column("release_role", sa.String),
    )
    op.bulk_insert(
        hold_code,
        [
            {
                "code": "PARTIAL_RUN",
                "description": "the step did not process every wafer of the lot",
                "release_role": "engineer",
            }
        ],
    )


def downgrade() -> None:
    op.execute("DELETE FROM hold_code WHERE code = 'PARTIAL_RUN'")
    with op.batch_alter_table("lot") as batch:
        batch.drop_column("route_completed_at")

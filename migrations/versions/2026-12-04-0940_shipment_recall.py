"""shipment recall: a shipment called back before the destination received it

Revision ID: 3b7d2e91c4a5
Revises: 9a3c7e5b1d42
Create Date: 2026-12-04 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import UTCDateTime

revision: str = "3b7d2e91c4a5"
down_revision: str | None = "9a3c7e5b1d42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("lot_transfer") as batch:
        batch.add_column(sa.Column("recalled_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("recalled_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("recall_reason", sa.String(length=500), nullable=True))
        batch.create_check_constraint(
            "recall_recorded",
            "(recalled_at IS NULL) = (recalled_by IS NULL)"
            " AND (recalled_at IS NULL) = (recall_reason IS NULL)",
        )
        batch.create_check_constraint(
            "received_or_recalled", "received_at IS NULL OR recalled_at IS NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("lot_transfer") as batch:
        batch.drop_constraint(op.f("ck_lot_transfer_received_or_recalled"), type_="check")
        batch.drop_constraint(op.f("ck_lot_transfer_recall_recorded"), type_="check")
        batch.drop_column("recall_reason")
        batch.drop_column("recalled_by")
        batch.drop_column("recalled_at")

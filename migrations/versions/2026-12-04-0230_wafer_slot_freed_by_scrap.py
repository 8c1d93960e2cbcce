"""wafer.slot nullable: a scrapped wafer leaves its carrier and frees its slot

Revision ID: 5e8a0c4f7d21
Revises: 3c1d7e9a2b40
Create Date: 2026-12-04 02:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e8a0c4f7d21"
down_revision: str | None = "3c1d7e9a2b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("wafer") as batch:
        batch.alter_column("slot", existing_type=sa.Integer(), nullable=True)
    # Wafers scrapped before this revision give their slots back too.
    op.execute("UPDATE wafer SET slot = NULL WHERE state = 'scrapped'")


def downgrade() -> None:
    # Which slot a scrapped wafer had is in its SCRAP event, not here: the downgrade fails
    # (NOT NULL) while any wafer has none, rather than invent slots.
    with op.batch_alter_table("wafer") as batch:
        batch.alter_column("slot", existing_type=sa.Integer(), nullable=False)

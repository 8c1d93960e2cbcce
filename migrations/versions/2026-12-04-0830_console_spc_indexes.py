"""console: indexes for the charts that concern a tool or a lot (the SPC pages and the links
from the tool and lot pages look points up by tool and by lot)

Revision ID: 3b8d0e6c5a71
Revises: 8d3b7e2c4f15
Create Date: 2026-12-04 08:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3b8d0e6c5a71"
down_revision: str | None = "8d3b7e2c4f15"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("spc_point", schema=None) as batch_op:
        batch_op.create_index("ix_spc_point_equipment", ["equipment_id", "chart_id"], unique=False)
        batch_op.create_index("ix_spc_point_lot", ["lot_id", "chart_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spc_point", schema=None) as batch_op:
        batch_op.drop_index("ix_spc_point_lot")
        batch_op.drop_index("ix_spc_point_equipment")

"""lot types: production, engineering, monitor, dummy, rework lots

Revision ID: 8d3b7e2c4f15
Revises: 6c90a86998bc
Create Date: 2026-12-04 09:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8d3b7e2c4f15"
down_revision: str | None = "6c90a86998bc"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TYPES = ("production", "engineering", "monitor", "dummy", "rework")


def upgrade() -> None:
    # Every lot that exists is a production lot (the only kind there was).
    with op.batch_alter_table("lot") as batch:
        batch.add_column(
            sa.Column(
                "lot_type",
                sa.Enum(
                    *TYPES,
                    name="lot_type",
                    native_enum=False,
                    create_constraint=False,
                    length=19,
                ),
                nullable=False,
                server_default="production",
            )
        )
        batch.create_check_constraint(
            "lot_type", "lot_type IN (" + ", ".join(f"'{t}'" for t in TYPES) + ")"
        )


def downgrade() -> None:
    with op.batch_alter_table("lot") as batch:
        batch.drop_constraint("lot_type", type_="check")
        batch.drop_column("lot_type")

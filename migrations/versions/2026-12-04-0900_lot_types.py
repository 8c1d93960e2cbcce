"""lot types: production, engineering, monitor, dummy, rework lots (and start plans' lot type)

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


def _add(table: str, constraint: str) -> None:
    # Every lot and plan that exists is a production one (the only kind there was).
    with op.batch_alter_table(table) as batch:
        batch.add_column(
            sa.Column(
                "lot_type",
                sa.Enum(
                    *TYPES, name=constraint, native_enum=False, create_constraint=False, length=19
                ),
                nullable=False,
                server_default="production",
            )
        )
        batch.create_check_constraint(
            constraint, "lot_type IN (" + ", ".join(f"'{t}'" for t in TYPES) + ")"
        )


def _drop(table: str, constraint: str) -> None:
    with op.batch_alter_table(table) as batch:
        batch.drop_constraint(constraint, type_="check")
        batch.drop_column("lot_type")


def upgrade() -> None:
    _add("lot", "lot_type")
    _add("start_plan", "start_plan_lot_type")


def downgrade() -> None:
    _drop("start_plan", "start_plan_lot_type")
    _drop("lot", "lot_type")

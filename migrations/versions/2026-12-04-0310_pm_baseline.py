"""pm_baseline: where a usage-based PM plan starts counting on each tool

Revision ID: 6b4d2a8e0f13
Revises: 1a7c3e5b9f02
Create Date: 2026-12-04 03:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import UTCDateTime

revision: str = "6b4d2a8e0f13"
down_revision: str | None = "1a7c3e5b9f02"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "pm_baseline",
        sa.Column("pm_plan_id", _ID, nullable=False),
        sa.Column("equipment_id", _ID, nullable=False),
        sa.Column("wafers", sa.Integer(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["equipment_id"], ["equipment.id"], name=op.f("fk_pm_baseline_equipment_id_equipment")
        ),
        sa.ForeignKeyConstraint(
            ["pm_plan_id"], ["pm_plan.id"], name=op.f("fk_pm_baseline_pm_plan_id_pm_plan")
        ),
        sa.PrimaryKeyConstraint("pm_plan_id", "equipment_id", name=op.f("pk_pm_baseline")),
    )


def downgrade() -> None:
    op.drop_table("pm_baseline")

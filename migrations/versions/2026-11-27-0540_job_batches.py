"""job batches: the lots of a job order (several for a furnace or wet bench batch)

Revision ID: 7b2e4c1d9a05
Revises: 680cd793b4f3
Create Date: 2026-11-27 05:40:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7b2e4c1d9a05"
down_revision: str | None = "680cd793b4f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "equipment_job_lot",
        sa.Column("job_id", _ID, nullable=False),
        sa.Column("lot_id", _ID, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["equipment_job.id"], name=op.f("fk_equipment_job_lot_job_id_equipment_job")
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lot.id"], name=op.f("fk_equipment_job_lot_lot_id_lot")
        ),
        sa.PrimaryKeyConstraint("job_id", "lot_id", name=op.f("pk_equipment_job_lot")),
    )
    op.create_index("ix_equipment_job_lot_lot_id", "equipment_job_lot", ["lot_id"], unique=False)
    # Every existing job order had exactly one lot: its lead.
    op.execute(
        "INSERT INTO equipment_job_lot (job_id, lot_id, position) "
        "SELECT id, lot_id, 1 FROM equipment_job"
    )


def downgrade() -> None:
    op.drop_index("ix_equipment_job_lot_lot_id", table_name="equipment_job_lot")
    op.drop_table("equipment_job_lot")

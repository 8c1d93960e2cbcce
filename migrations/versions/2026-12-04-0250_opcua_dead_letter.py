"""opcua_dead_letter: messages from tools the MES could not apply, kept as they came

Revision ID: 9d2f6b1e8c37
Revises: 5e8a0c4f7d21
Create Date: 2026-12-04 02:50:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import UTCDateTime

revision: str = "9d2f6b1e8c37"
down_revision: str | None = "5e8a0c4f7d21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "opcua_dead_letter",
        sa.Column("id", _ID, nullable=False),
        sa.Column("fab_id", _ID, nullable=False),
        sa.Column("equipment_id", _ID, nullable=False),
        sa.Column("received_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["equipment_id"],
            ["equipment.id"],
            name=op.f("fk_opcua_dead_letter_equipment_id_equipment"),
        ),
        sa.ForeignKeyConstraint(
            ["fab_id"], ["fab.id"], name=op.f("fk_opcua_dead_letter_fab_id_fab")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_opcua_dead_letter")),
    )
    op.create_index(
        "ix_opcua_dead_letter_equipment_id", "opcua_dead_letter", ["equipment_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_opcua_dead_letter_equipment_id", table_name="opcua_dead_letter")
    op.drop_table("opcua_dead_letter")

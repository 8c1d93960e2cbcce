"""dispatch automation: leader lease per fab, decision log, shadow rule sets

Revision ID: 680cd793b4f3
Revises: 55ac97530944
Create Date: 2026-11-27 04:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mes.db.types

revision: str = "680cd793b4f3"
down_revision: str | None = "55ac97530944"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_leader",
        sa.Column("fab_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("acquired_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["fab_id"], ["fab.id"], name=op.f("fk_dispatch_leader_fab_id_fab")),
        sa.PrimaryKeyConstraint("fab_id", name=op.f("pk_dispatch_leader")),
    )
    op.create_table(
        "dispatch_decision",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fab_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "equipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("cycle_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("rule_set", sa.String(length=96), nullable=False),
        sa.Column("rule_set_version", sa.Integer(), nullable=False),
        sa.Column("chosen_lot", sa.String(length=64), nullable=True),
        sa.Column("chosen_score", sa.Double(), nullable=True),
        sa.Column(
            "top",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "excluded",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("refusal_code", sa.String(length=64), nullable=True),
        sa.Column("job_order_id", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["equipment_id"],
            ["equipment.id"],
            name=op.f("fk_dispatch_decision_equipment_id_equipment"),
        ),
        sa.ForeignKeyConstraint(
            ["fab_id"], ["fab.id"], name=op.f("fk_dispatch_decision_fab_id_fab")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_decision")),
    )
    with op.batch_alter_table("dispatch_decision", schema=None) as batch_op:
        batch_op.create_index("ix_dispatch_decision_fab_time", ["fab_id", "cycle_at"], unique=False)
        batch_op.create_index(
            "ix_dispatch_decision_tool_time", ["equipment_id", "cycle_at"], unique=False
        )

    with op.batch_alter_table("dispatch_rule_set", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("shadow", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("dispatch_rule_set", schema=None) as batch_op:
        batch_op.drop_column("shadow")

    with op.batch_alter_table("dispatch_decision", schema=None) as batch_op:
        batch_op.drop_index("ix_dispatch_decision_tool_time")
        batch_op.drop_index("ix_dispatch_decision_fab_time")

    op.drop_table("dispatch_decision")
    op.drop_table("dispatch_leader")

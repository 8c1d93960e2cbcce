"""dispatch: rule sets, setup changes and minimum runs, fab transfer times; step setup and
tool dedication; the tool's current setup

Revision ID: 55ac97530944
Revises: 32937aeeb7b4
Create Date: 2026-11-27 04:10:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mes.db.types

revision: str = "55ac97530944"
down_revision: str | None = "32937aeeb7b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "setup_change",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("from_setup", sa.String(length=32), nullable=False),
        sa.Column("to_setup", sa.String(length=32), nullable=False),
        sa.Column("time_s", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("time_s >= 0", name=op.f("ck_setup_change_time_nonnegative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_setup_change")),
        sa.UniqueConstraint(
            "from_setup", "to_setup", name=op.f("uq_setup_change_from_setup_to_setup")
        ),
    )
    op.create_table(
        "setup_min_run",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("setup", sa.String(length=32), nullable=False),
        sa.Column("min_run", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint("min_run >= 1", name=op.f("ck_setup_min_run_min_run_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_setup_min_run")),
        sa.UniqueConstraint("setup", name=op.f("uq_setup_min_run_setup")),
    )
    op.create_table(
        "fab_transfer_time",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "from_fab_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "to_fab_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("time_s", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "from_fab_id <> to_fab_id", name=op.f("ck_fab_transfer_time_between_fabs")
        ),
        sa.CheckConstraint("time_s >= 0", name=op.f("ck_fab_transfer_time_time_nonnegative")),
        sa.ForeignKeyConstraint(
            ["from_fab_id"], ["fab.id"], name=op.f("fk_fab_transfer_time_from_fab_id_fab")
        ),
        sa.ForeignKeyConstraint(
            ["to_fab_id"], ["fab.id"], name=op.f("fk_fab_transfer_time_to_fab_id_fab")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fab_transfer_time")),
        sa.UniqueConstraint(
            "from_fab_id", "to_fab_id", name=op.f("uq_fab_transfer_time_from_fab_id_to_fab_id")
        ),
    )
    op.create_table(
        "dispatch_rule_set",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fab_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("area_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "tool_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("scope_key", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "definition",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "area_id IS NULL OR tool_group_id IS NULL", name=op.f("ck_dispatch_rule_set_one_scope")
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_dispatch_rule_set_version_positive")),
        sa.ForeignKeyConstraint(
            ["area_id"], ["area.id"], name=op.f("fk_dispatch_rule_set_area_id_area")
        ),
        sa.ForeignKeyConstraint(
            ["fab_id"], ["fab.id"], name=op.f("fk_dispatch_rule_set_fab_id_fab")
        ),
        sa.ForeignKeyConstraint(
            ["tool_group_id"],
            ["tool_group.id"],
            name=op.f("fk_dispatch_rule_set_tool_group_id_tool_group"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_rule_set")),
        sa.UniqueConstraint(
            "scope_key", "version", name=op.f("uq_dispatch_rule_set_scope_key_version")
        ),
    )
    with op.batch_alter_table("dispatch_rule_set", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispatch_rule_set_fab_id"), ["fab_id"], unique=False)
        batch_op.create_index(
            "uq_dispatch_rule_set_one_active",
            ["scope_key"],
            unique=True,
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )

    with op.batch_alter_table("equipment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("current_setup", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("setup_lots", sa.Integer(), server_default="0", nullable=False)
        )

    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.add_column(sa.Column("setup", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("same_tool_as_sequence", sa.Integer(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_step_dedication_backward"),
            "same_tool_as_sequence IS NULL OR same_tool_as_sequence < sequence",
        )


def downgrade() -> None:
    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_step_dedication_backward"), type_="check")
        batch_op.drop_column("same_tool_as_sequence")
        batch_op.drop_column("setup")

    with op.batch_alter_table("equipment", schema=None) as batch_op:
        batch_op.drop_column("setup_lots")
        batch_op.drop_column("current_setup")

    with op.batch_alter_table("dispatch_rule_set", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_dispatch_rule_set_one_active",
            sqlite_where=sa.text("active"),
            postgresql_where=sa.text("active"),
        )
        batch_op.drop_index(batch_op.f("ix_dispatch_rule_set_fab_id"))

    op.drop_table("dispatch_rule_set")
    op.drop_table("fab_transfer_time")
    op.drop_table("setup_min_run")
    op.drop_table("setup_change")

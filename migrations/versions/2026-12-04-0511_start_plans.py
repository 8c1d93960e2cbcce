"""start plans: release planning master data, the lots they released, the releaser's lease

Revision ID: 6c90a86998bc
Revises: f382026bb7ef
Create Date: 2026-12-04 05:11:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import JsonDocument, UTCDateTime

revision: str = "6c90a86998bc"
down_revision: str | None = "f382026bb7ef"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(
        *values,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(v) for v in values) + 8,
    )


def upgrade() -> None:
    op.create_table(
        "release_leader",
        sa.Column("fab_id", _ID, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("acquired_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["fab_id"], ["fab.id"], name=op.f("fk_release_leader_fab_id_fab")),
        sa.PrimaryKeyConstraint("fab_id", name=op.f("pk_release_leader")),
    )
    op.create_table(
        "start_plan",
        sa.Column("id", _ID, nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("fab_id", _ID, nullable=False),
        sa.Column("product_id", _ID, nullable=False),
        sa.Column("route_code", sa.String(length=32), nullable=True),
        sa.Column("rate", sa.Float(), nullable=False),
        sa.Column("rate_per", _enum("start_plan_rate_per", "hour", "day"), nullable=False),
        sa.Column("wafer_count", sa.Integer(), nullable=False),
        sa.Column(
            "due_rule", _enum("start_plan_due_rule", "x_factor", "fixed_days"), nullable=False
        ),
        sa.Column("due_value", sa.Float(), nullable=False),
        sa.Column("priority_mix", JsonDocument, nullable=False),
        sa.Column("max_wip", sa.Integer(), nullable=True),
        sa.Column("catch_up_max", sa.Integer(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("starts_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("anchor_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("anchor_sequence", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "anchor_sequence >= 1", name=op.f("ck_start_plan_anchor_sequence_positive")
        ),
        sa.CheckConstraint("catch_up_max >= 1", name=op.f("ck_start_plan_catch_up_positive")),
        sa.CheckConstraint("due_value > 0", name=op.f("ck_start_plan_due_value_positive")),
        sa.CheckConstraint(
            "max_wip IS NULL OR max_wip >= 1", name=op.f("ck_start_plan_max_wip_positive")
        ),
        sa.CheckConstraint("rate > 0", name=op.f("ck_start_plan_rate_positive")),
        sa.CheckConstraint("wafer_count >= 1", name=op.f("ck_start_plan_wafer_count_positive")),
        sa.ForeignKeyConstraint(["fab_id"], ["fab.id"], name=op.f("fk_start_plan_fab_id_fab")),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_start_plan_product_id_product")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_start_plan")),
        sa.UniqueConstraint("code", name=op.f("uq_start_plan_code")),
    )
    op.create_index(op.f("ix_start_plan_fab_id"), "start_plan", ["fab_id"])
    op.create_index(op.f("ix_start_plan_product_id"), "start_plan", ["product_id"])
    op.create_table(
        "start_plan_release",
        sa.Column("id", _ID, nullable=False),
        sa.Column("start_plan_id", _ID, nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("slot_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("released_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("lot_id", _ID, nullable=False),
        sa.Column("priority_class", sa.String(length=16), nullable=False),
        sa.Column("due_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("skipped_before", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.CheckConstraint("sequence >= 1", name=op.f("ck_start_plan_release_sequence_positive")),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["lot.id"], name=op.f("fk_start_plan_release_lot_id_lot")
        ),
        sa.ForeignKeyConstraint(
            ["start_plan_id"],
            ["start_plan.id"],
            name=op.f("fk_start_plan_release_start_plan_id_start_plan"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_start_plan_release")),
        sa.UniqueConstraint("lot_id", name=op.f("uq_start_plan_release_lot_id")),
        sa.UniqueConstraint(
            "start_plan_id", "sequence", name=op.f("uq_start_plan_release_start_plan_id_sequence")
        ),
    )


def downgrade() -> None:
    op.drop_table("start_plan_release")
    op.drop_index(op.f("ix_start_plan_product_id"), table_name="start_plan")
    op.drop_index(op.f("ix_start_plan_fab_id"), table_name="start_plan")
    op.drop_table("start_plan")
    op.drop_table("release_leader")

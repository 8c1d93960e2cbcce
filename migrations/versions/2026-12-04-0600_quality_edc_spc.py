"""quality: data collection (EDC) plans and values, SPC charts, limits, points, violations,
notifications; the hold codes SPC, OUT_OF_SPEC, EDC_MISSING and the substate UDT.SPC

Revision ID: f382026bb7ef
Revises: 7c5e1f3a9d24
Create Date: 2026-12-04 05:14:34.928787+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import mes.db.types

revision: str = "f382026bb7ef"
down_revision: str | None = "7c5e1f3a9d24"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


HOLD_CODES = (
    ("SPC", "SPC run-rule violation: out of control (OCAP)", "engineer"),
    ("OUT_OF_SPEC", "a measured value is outside the specification limits", "engineer"),
    ("EDC_MISSING", "a required data collection value was not reported", "engineer"),
)
SUBSTATE = (
    "UDT.SPC",
    "taken out of production by an SPC violation (OCAP) until an engineer releases it",
)


_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "edc_plan",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("route_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "product_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "tool_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("context_key", sa.String(length=300), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
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
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_edc_plan_product_id_product")
        ),
        sa.ForeignKeyConstraint(
            ["route_id"], ["route.id"], name=op.f("fk_edc_plan_route_id_route")
        ),
        sa.ForeignKeyConstraint(
            ["tool_group_id"], ["tool_group.id"], name=op.f("fk_edc_plan_tool_group_id_tool_group")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edc_plan")),
        sa.UniqueConstraint("context_key", name=op.f("uq_edc_plan_context_key")),
        sa.UniqueConstraint("name", name=op.f("uq_edc_plan_name")),
    )
    with op.batch_alter_table("edc_plan", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_edc_plan_operation"), ["operation"], unique=False)

    op.create_table(
        "edc_plan_version",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "draft",
                "approved",
                "obsolete",
                name="edc_plan_version_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("approved_by", sa.String(length=64), nullable=True),
        sa.Column("approved_at", mes.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("obsoleted_by", sa.String(length=64), nullable=True),
        sa.Column("obsoleted_at", mes.db.types.UTCDateTime(timezone=True), nullable=True),
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
            "status = 'draft' OR (approved_at IS NOT NULL AND approved_by IS NOT NULL)",
            name=op.f("ck_edc_plan_version_approval_recorded"),
        ),
        sa.CheckConstraint("version >= 1", name=op.f("ck_edc_plan_version_version_positive")),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["edc_plan.id"], name=op.f("fk_edc_plan_version_plan_id_edc_plan")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edc_plan_version")),
        sa.UniqueConstraint("plan_id", "version", name=op.f("uq_edc_plan_version_plan_id_version")),
    )
    op.create_table(
        "spc_chart",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("parameter", sa.String(length=64), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subgroup", sa.String(length=8), nullable=False),
        sa.Column(
            "rules",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "actions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("baseline_points", sa.Integer(), nullable=False),
        sa.Column("next_lots", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
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
        sa.ForeignKeyConstraint(
            ["plan_id"], ["edc_plan.id"], name=op.f("fk_spc_chart_plan_id_edc_plan")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spc_chart")),
        sa.UniqueConstraint("code", name=op.f("uq_spc_chart_code")),
    )
    with op.batch_alter_table("spc_chart", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spc_chart_plan_id"), ["plan_id"], unique=False)

    op.create_table(
        "spc_limits",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chart_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("center", sa.Float(), nullable=False),
        sa.Column("sigma_within", sa.Float(), nullable=False),
        sa.Column("dispersion_center", sa.Float(), nullable=False),
        sa.Column("subgroup_size", sa.Integer(), nullable=False),
        sa.Column("baseline_first", sa.Integer(), nullable=True),
        sa.Column("baseline_last", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("sigma_within > 0", name=op.f("ck_spc_limits_sigma_positive")),
        sa.ForeignKeyConstraint(
            ["chart_id"], ["spc_chart.id"], name=op.f("fk_spc_limits_chart_id_spc_chart")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spc_limits")),
        sa.UniqueConstraint("chart_id", "version", name=op.f("uq_spc_limits_chart_id_version")),
    )
    op.create_table(
        "edc_value",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fab_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "plan_version_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("parameter", sa.String(length=64), nullable=False),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("scribe_id", sa.String(length=32), nullable=True),
        sa.Column("site", sa.Integer(), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column(
            "product_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("step_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column(
            "equipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("chamber", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("collected_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["equipment_id"], ["equipment.id"], name=op.f("fk_edc_value_equipment_id_equipment")
        ),
        sa.ForeignKeyConstraint(["fab_id"], ["fab.id"], name=op.f("fk_edc_value_fab_id_fab")),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_edc_value_lot_id_lot")),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["edc_plan.id"], name=op.f("fk_edc_value_plan_id_edc_plan")
        ),
        sa.ForeignKeyConstraint(
            ["plan_version_id"],
            ["edc_plan_version.id"],
            name=op.f("fk_edc_value_plan_version_id_edc_plan_version"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_edc_value_product_id_product")
        ),
        sa.ForeignKeyConstraint(["step_id"], ["step.id"], name=op.f("fk_edc_value_step_id_step")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edc_value")),
    )
    with op.batch_alter_table("edc_value", schema=None) as batch_op:
        batch_op.create_index("ix_edc_value_lot", ["lot_id"], unique=False)
        batch_op.create_index(
            "ix_edc_value_parameter", ["plan_id", "parameter", "collected_at"], unique=False
        )

    op.create_table(
        "spc_point",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chart_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("dispersion", sa.Float(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column(
            "values",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("limits_version", sa.Integer(), nullable=True),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=True),
        sa.Column("scribe_id", sa.String(length=32), nullable=True),
        sa.Column(
            "equipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("chamber", sa.String(length=32), nullable=True),
        sa.Column("collected_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["chart_id"], ["spc_chart.id"], name=op.f("fk_spc_point_chart_id_spc_chart")
        ),
        sa.ForeignKeyConstraint(
            ["equipment_id"], ["equipment.id"], name=op.f("fk_spc_point_equipment_id_equipment")
        ),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_spc_point_lot_id_lot")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spc_point")),
        sa.UniqueConstraint("chart_id", "number", name=op.f("uq_spc_point_chart_id_number")),
    )
    op.create_table(
        "spc_violation",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fab_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("chart_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("plan_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("parameter", sa.String(length=64), nullable=False),
        sa.Column("rule", sa.String(length=16), nullable=False),
        sa.Column("point_number", sa.Integer(), nullable=True),
        sa.Column(
            "points",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "equipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("chamber", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column(
            "actions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("detected_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by", sa.String(length=64), nullable=True),
        sa.Column("acknowledged_at", mes.db.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "(acknowledged_at IS NULL) = (acknowledged_by IS NULL)",
            name=op.f("ck_spc_violation_ack_recorded"),
        ),
        sa.ForeignKeyConstraint(
            ["chart_id"], ["spc_chart.id"], name=op.f("fk_spc_violation_chart_id_spc_chart")
        ),
        sa.ForeignKeyConstraint(
            ["equipment_id"], ["equipment.id"], name=op.f("fk_spc_violation_equipment_id_equipment")
        ),
        sa.ForeignKeyConstraint(["fab_id"], ["fab.id"], name=op.f("fk_spc_violation_fab_id_fab")),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_spc_violation_lot_id_lot")),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["edc_plan.id"], name=op.f("fk_spc_violation_plan_id_edc_plan")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spc_violation")),
    )
    with op.batch_alter_table("spc_violation", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_spc_violation_chart_id"), ["chart_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_spc_violation_fab_id"), ["fab_id"], unique=False)
        batch_op.create_index(
            "ix_spc_violation_open", ["acknowledged_at", "detected_at"], unique=False
        )

    op.create_table(
        "quality_notification",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("fab_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "violation_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["fab_id"], ["fab.id"], name=op.f("fk_quality_notification_fab_id_fab")
        ),
        sa.ForeignKeyConstraint(
            ["violation_id"],
            ["spc_violation.id"],
            name=op.f("fk_quality_notification_violation_id_spc_violation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quality_notification")),
    )
    with op.batch_alter_table("quality_notification", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quality_notification_fab_id"), ["fab_id"], unique=False
        )

    op.create_table(
        "spc_tool_watch",
        sa.Column("id", _ID, nullable=False),
        sa.Column("equipment_id", _ID, nullable=False),
        sa.Column("violation_id", _ID, nullable=False),
        sa.Column("lots_left", sa.Integer(), nullable=False),
        sa.Column("created_at", mes.db.types.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("lots_left >= 0", name=op.f("ck_spc_tool_watch_lots_left_nonnegative")),
        sa.ForeignKeyConstraint(
            ["equipment_id"],
            ["equipment.id"],
            name=op.f("fk_spc_tool_watch_equipment_id_equipment"),
        ),
        sa.ForeignKeyConstraint(
            ["violation_id"],
            ["spc_violation.id"],
            name=op.f("fk_spc_tool_watch_violation_id_spc_violation"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spc_tool_watch")),
    )
    with op.batch_alter_table("spc_tool_watch", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_spc_tool_watch_equipment_id"), ["equipment_id"], unique=False
        )

    hold_code = sa.table(
        "hold_code",
        sa.column("code", sa.String),
        sa.column("description", sa.String),
        sa.column("release_role", sa.String),
    )
    op.bulk_insert(
        hold_code, [{"code": c, "description": d, "release_role": r} for c, d, r in HOLD_CODES]
    )
    substate = sa.table(
        "equipment_substate",
        sa.column("code", sa.String),
        sa.column("state", sa.String),
        sa.column("description", sa.String),
    )
    op.bulk_insert(substate, [{"code": SUBSTATE[0], "state": "UDT", "description": SUBSTATE[1]}])


def downgrade() -> None:
    op.execute("DELETE FROM equipment_substate WHERE code = 'UDT.SPC'")
    op.execute("DELETE FROM hold_code WHERE code IN ('SPC', 'OUT_OF_SPEC', 'EDC_MISSING')")
    with op.batch_alter_table("spc_tool_watch", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spc_tool_watch_equipment_id"))

    op.drop_table("spc_tool_watch")
    with op.batch_alter_table("quality_notification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quality_notification_fab_id"))

    op.drop_table("quality_notification")
    with op.batch_alter_table("spc_violation", schema=None) as batch_op:
        batch_op.drop_index("ix_spc_violation_open")
        batch_op.drop_index(batch_op.f("ix_spc_violation_fab_id"))
        batch_op.drop_index(batch_op.f("ix_spc_violation_chart_id"))

    op.drop_table("spc_violation")
    op.drop_table("spc_point")
    with op.batch_alter_table("edc_value", schema=None) as batch_op:
        batch_op.drop_index("ix_edc_value_parameter")
        batch_op.drop_index("ix_edc_value_lot")

    op.drop_table("edc_value")
    op.drop_table("spc_limits")
    with op.batch_alter_table("spc_chart", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_spc_chart_plan_id"))

    op.drop_table("spc_chart")
    op.drop_table("edc_plan_version")
    with op.batch_alter_table("edc_plan", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_edc_plan_operation"))

    op.drop_table("edc_plan")

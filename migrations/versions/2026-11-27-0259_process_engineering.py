"""process_engineering: scheduled route activation, draft steps without recipe, recipe
parameter schemas, context rules, obsolete recipes, disqualification kept as history

Revision ID: 420a1d5c4b08
Revises: f94f01a3a737
Create Date: 2026-11-27 02:59:44.101561+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import mes.db.types

revision: str = "420a1d5c4b08"
down_revision: str | None = "f94f01a3a737"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROUTE_STATUSES_OLD = "'draft', 'active', 'obsolete'"
ROUTE_STATUSES_NEW = "'draft', 'pending', 'active', 'obsolete'"


def _qualification_indexes(standing_only: bool) -> None:
    extra = " AND disqualified_at IS NULL" if standing_only else ""
    tool_where = sa.text("chamber_id IS NULL" + extra)
    chamber_where = sa.text("chamber_id IS NOT NULL" + extra)
    op.create_index(
        "uq_recipe_qualification_tool",
        "recipe_qualification",
        ["recipe_version_id", "equipment_id"],
        unique=True,
        sqlite_where=tool_where,
        postgresql_where=tool_where,
    )
    op.create_index(
        "uq_recipe_qualification_chamber",
        "recipe_qualification",
        ["recipe_version_id", "equipment_id", "chamber_id"],
        unique=True,
        sqlite_where=chamber_where,
        postgresql_where=chamber_where,
    )


def _drop_qualification_indexes() -> None:
    op.drop_index("uq_recipe_qualification_chamber", table_name="recipe_qualification")
    op.drop_index("uq_recipe_qualification_tool", table_name="recipe_qualification")


def upgrade() -> None:
    op.create_table(
        "recipe_parameter_spec",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "tool_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "number",
                "text",
                "flag",
                name="parameter_kind",
                native_enum=False,
                create_constraint=True,
                length=14,
            ),
            nullable=False,
        ),
        sa.Column("unit", sa.String(length=16), nullable=True),
        sa.Column("lower", sa.Float(), nullable=True),
        sa.Column("upper", sa.Float(), nullable=True),
        sa.Column("required", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=True),
        sa.Column(
            "created_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "lower IS NULL OR upper IS NULL OR lower <= upper",
            name=op.f("ck_recipe_parameter_spec_limits_ordered"),
        ),
        sa.ForeignKeyConstraint(
            ["tool_group_id"],
            ["tool_group.id"],
            name=op.f("fk_recipe_parameter_spec_tool_group_id_tool_group"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipe_parameter_spec")),
        sa.UniqueConstraint(
            "tool_group_id", "name", name=op.f("uq_recipe_parameter_spec_tool_group_id_name")
        ),
    )
    with op.batch_alter_table("recipe_parameter_spec", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recipe_parameter_spec_tool_group_id"), ["tool_group_id"], unique=False
        )

    op.create_table(
        "recipe_context_rule",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("logical_recipe", sa.String(length=64), nullable=False),
        sa.Column(
            "product_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("operation", sa.String(length=64), nullable=True),
        sa.Column(
            "tool_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "equipment_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "chamber_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "recipe_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("context_key", sa.String(length=400), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            mes.db.types.UTCDateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "chamber_id IS NULL OR equipment_id IS NOT NULL",
            name=op.f("ck_recipe_context_rule_chamber_needs_tool"),
        ),
        sa.ForeignKeyConstraint(
            ["chamber_id"], ["chamber.id"], name=op.f("fk_recipe_context_rule_chamber_id_chamber")
        ),
        sa.ForeignKeyConstraint(
            ["equipment_id"],
            ["equipment.id"],
            name=op.f("fk_recipe_context_rule_equipment_id_equipment"),
        ),
        sa.ForeignKeyConstraint(
            ["product_id"], ["product.id"], name=op.f("fk_recipe_context_rule_product_id_product")
        ),
        sa.ForeignKeyConstraint(
            ["recipe_id"], ["recipe.id"], name=op.f("fk_recipe_context_rule_recipe_id_recipe")
        ),
        sa.ForeignKeyConstraint(
            ["tool_group_id"],
            ["tool_group.id"],
            name=op.f("fk_recipe_context_rule_tool_group_id_tool_group"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recipe_context_rule")),
        sa.UniqueConstraint("context_key", name=op.f("uq_recipe_context_rule_context_key")),
    )
    with op.batch_alter_table("recipe_context_rule", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_recipe_context_rule_logical_recipe"), ["logical_recipe"], unique=False
        )

    with op.batch_alter_table("recipe_qualification", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("disqualified_at", mes.db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("disqualified_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("disqualify_reason", sa.Text(), nullable=True))

    with op.batch_alter_table("recipe_version", schema=None) as batch_op:
        batch_op.add_column(sa.Column("obsoleted_by", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("obsoleted_at", mes.db.types.UTCDateTime(timezone=True), nullable=True)
        )

    _drop_qualification_indexes()
    _qualification_indexes(standing_only=True)

    with op.batch_alter_table("route_version", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("effective_at", mes.db.types.UTCDateTime(timezone=True), nullable=True)
        )
    # Versions activated before scheduling existed took effect when they were signed.
    op.execute(
        "UPDATE route_version SET effective_at = activated_at WHERE activated_at IS NOT NULL"
    )
    with op.batch_alter_table("route_version", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_route_version_activated_has_time"), type_="check")
        batch_op.create_check_constraint(
            "activated_has_time",
            "status = 'draft' OR (activated_at IS NOT NULL AND effective_at IS NOT NULL)",
        )
        batch_op.drop_constraint(op.f("ck_route_version_route_version_status"), type_="check")
        batch_op.create_check_constraint(
            "route_version_status", f"status IN ({ROUTE_STATUSES_NEW})"
        )

    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.alter_column("recipe_name", existing_type=sa.VARCHAR(length=64), nullable=True)


def downgrade() -> None:
    op.execute("UPDATE step SET recipe_name = '' WHERE recipe_name IS NULL")
    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.alter_column("recipe_name", existing_type=sa.VARCHAR(length=64), nullable=False)

    # A scheduled activation has no older form: it goes back to being a draft.
    op.execute(
        "UPDATE route_version SET status = 'draft', activated_at = NULL, activated_by = NULL "
        "WHERE status = 'pending'"
    )
    with op.batch_alter_table("route_version", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_route_version_route_version_status"), type_="check")
        batch_op.create_check_constraint(
            "route_version_status", f"status IN ({ROUTE_STATUSES_OLD})"
        )
        batch_op.drop_constraint(op.f("ck_route_version_activated_has_time"), type_="check")
        batch_op.create_check_constraint(
            "activated_has_time", "status = 'draft' OR activated_at IS NOT NULL"
        )
        batch_op.drop_column("effective_at")

    with op.batch_alter_table("recipe_version", schema=None) as batch_op:
        batch_op.drop_column("obsoleted_at")
        batch_op.drop_column("obsoleted_by")

    # Only standing qualifications survive a downgrade: the old indexes allow one per tool.
    op.execute("DELETE FROM recipe_qualification WHERE disqualified_at IS NOT NULL")
    _drop_qualification_indexes()
    _qualification_indexes(standing_only=False)
    with op.batch_alter_table("recipe_qualification", schema=None) as batch_op:
        batch_op.drop_column("disqualify_reason")
        batch_op.drop_column("disqualified_by")
        batch_op.drop_column("disqualified_at")

    with op.batch_alter_table("recipe_context_rule", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recipe_context_rule_logical_recipe"))

    op.drop_table("recipe_context_rule")
    with op.batch_alter_table("recipe_parameter_spec", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recipe_parameter_spec_tool_group_id"))

    op.drop_table("recipe_parameter_spec")

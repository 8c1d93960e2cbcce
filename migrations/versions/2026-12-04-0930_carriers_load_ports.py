"""carriers: location (stocker, load port, in transit) and sorter jobs

Revision ID: 9a3c7e5b1d42
Revises: 3b8d0e6c5a71
Create Date: 2026-12-04 08:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import JsonDocument, UTCDateTime

revision: str = "9a3c7e5b1d42"
down_revision: str | None = "3b8d0e6c5a71"
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
    with op.batch_alter_table("carrier") as batch:
        batch.add_column(
            sa.Column(
                "location",
                _enum("carrier_location", "stocker", "load_port", "in_transit"),
                server_default="stocker",
                nullable=False,
            )
        )
        batch.add_column(sa.Column("stocker", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("load_port_id", _ID, nullable=True))
        batch.add_column(sa.Column("location_since", UTCDateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            op.f("fk_carrier_load_port_id_load_port"), "load_port", ["load_port_id"], ["id"]
        )
        batch.create_unique_constraint(op.f("uq_carrier_load_port_id"), ["load_port_id"])
        batch.create_check_constraint(
            "port_iff_at_port", "(location = 'load_port') = (load_port_id IS NOT NULL)"
        )
    op.create_table(
        "sorter_job",
        sa.Column("id", _ID, nullable=False),
        sa.Column("fab_id", _ID, nullable=False),
        sa.Column(
            "kind", _enum("sorter_job_kind", "transfer", "reslot", "split", "merge"), nullable=False
        ),
        sa.Column("lot_id", _ID, nullable=False),
        sa.Column("other_lot_id", _ID, nullable=True),
        sa.Column("source_carrier_id", _ID, nullable=True),
        sa.Column("target_carrier_id", _ID, nullable=True),
        sa.Column("moves", JsonDocument, nullable=False),
        sa.Column("requested_by", sa.String(length=64), nullable=False),
        sa.Column("completed_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["fab_id"], ["fab.id"], name=op.f("fk_sorter_job_fab_id_fab")),
        sa.ForeignKeyConstraint(["lot_id"], ["lot.id"], name=op.f("fk_sorter_job_lot_id_lot")),
        sa.ForeignKeyConstraint(
            ["other_lot_id"], ["lot.id"], name=op.f("fk_sorter_job_other_lot_id_lot")
        ),
        sa.ForeignKeyConstraint(
            ["source_carrier_id"],
            ["carrier.id"],
            name=op.f("fk_sorter_job_source_carrier_id_carrier"),
        ),
        sa.ForeignKeyConstraint(
            ["target_carrier_id"],
            ["carrier.id"],
            name=op.f("fk_sorter_job_target_carrier_id_carrier"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sorter_job")),
    )
    op.create_index(op.f("ix_sorter_job_fab_id"), "sorter_job", ["fab_id"])
    op.create_index(op.f("ix_sorter_job_lot_id"), "sorter_job", ["lot_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_sorter_job_lot_id"), table_name="sorter_job")
    op.drop_index(op.f("ix_sorter_job_fab_id"), table_name="sorter_job")
    op.drop_table("sorter_job")
    with op.batch_alter_table("carrier") as batch:
        batch.drop_constraint("port_iff_at_port", type_="check")
        batch.drop_constraint(op.f("ck_carrier_carrier_location"), type_="check")
        batch.drop_constraint(op.f("uq_carrier_load_port_id"), type_="unique")
        batch.drop_constraint(op.f("fk_carrier_load_port_id_load_port"), type_="foreignkey")
        batch.drop_column("location_since")
        batch.drop_column("load_port_id")
        batch.drop_column("stocker")
        batch.drop_column("location")

"""schema history: every migration applied, and whether it breaks older builds (readiness of
the old build's processes during a rolling upgrade)

Revision ID: 5c2e8f1a7d63
Revises: 3b7d1e5a9c42
Create Date: 2026-12-04 12:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from mes.db.types import UTCDateTime

revision: str = "5c2e8f1a7d63"
down_revision: str | None = "3b7d1e5a9c42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schema_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("revision", sa.String(length=32), nullable=False),
        sa.Column("down_revision", sa.String(length=32), nullable=True),
        sa.Column("breaks_older_builds", sa.Boolean(), nullable=False),
        sa.Column("applied_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_history")),
        sa.UniqueConstraint("revision", name=op.f("uq_schema_history_revision")),
    )


def downgrade() -> None:
    op.drop_table("schema_history")

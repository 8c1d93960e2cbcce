"""Which migrations a database has had, so that a build can tell whether a newer schema still
suits it (rolling upgrades).

Alembic's own table holds only the current revision. A build that meets a revision it does not
know (the migration job of the next release ran first, as the upgrade procedure asks) cannot tell
from that alone whether the new schema only added things (the old build keeps working) or changed
what it relies on. Every applied migration is therefore recorded here with its
``breaks_older_builds`` flag (a module attribute of the migration, False unless a migration says
otherwise), and :func:`readiness` decides from that list.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, String, delete, insert, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from mes.db.base import Base, BigIntPK
from mes.db.types import UTCDateTime


class SchemaStep(Base):
    """One migration applied to this database (removed again when it is downgraded)."""

    __tablename__ = "schema_history"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    revision: Mapped[str] = mapped_column(String(32), unique=True)
    down_revision: Mapped[str | None] = mapped_column(String(32))
    breaks_older_builds: Mapped[bool] = mapped_column(Boolean, default=False)
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime())


def record_step(
    connection: Connection,
    *,
    revision: str,
    down_revision: str | None,
    is_upgrade: bool,
    breaks_older_builds: bool,
) -> None:
    """Called by Alembic after each migration step, in the migration's transaction.

    Steps before the history table existed are not recorded: readiness only needs the steps
    after a build's own head, and every build since this table has it.
    """
    if not inspect(connection).has_table(SchemaStep.__tablename__):
        return  # the steps before the table, or the downgrade that dropped it
    if is_upgrade:
        connection.execute(
            insert(SchemaStep).values(
                revision=revision,
                down_revision=down_revision,
                breaks_older_builds=breaks_older_builds,
                applied_at=datetime.now(UTC),
            )
        )
    else:
        connection.execute(delete(SchemaStep).where(SchemaStep.revision == revision))


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: str


def readiness(
    database_revision: str | None,
    build_head: str | None,
    build_revisions: Collection[str],
    applied: Sequence[tuple[str, bool]],
) -> Readiness:
    """May a build whose migrations end at ``build_head`` serve a database at
    ``database_revision``? ``applied``: (revision, breaks older builds) in the order applied.

    At the head: yes. Behind it (a revision this build knows): no, its code needs the newer
    columns. Ahead (a revision it does not know): yes if the build's head is in the database's
    history and no migration applied after it breaks older builds — the expand-only rule of the
    upgrade procedure makes that the usual case.
    """
    if database_revision is None:
        return Readiness(False, "the database has no schema: run `mes db upgrade`")
    if database_revision == build_head:
        return Readiness(True, "schema at this build's head")
    if database_revision in build_revisions:
        return Readiness(
            False, f"schema {database_revision} is behind this build's {build_head}: migrate"
        )
    order = [revision for revision, _ in applied]
    if build_head not in order:
        return Readiness(
            False,
            f"schema {database_revision} is unknown to this build and its history does not "
            f"contain this build's head {build_head}",
        )
    later = applied[order.index(build_head) + 1 :]
    breaking = [revision for revision, breaks in later if breaks]
    if breaking:
        return Readiness(
            False,
            f"schema {database_revision} is newer than this build and migration "
            f"{breaking[0]} breaks older builds",
        )
    return Readiness(
        True,
        f"schema {database_revision} is newer than this build's {build_head}; "
        f"the {len(later)} migration(s) since only add",
    )


def step_facts(step: Any) -> dict[str, Any] | None:
    """What :func:`record_step` needs, from Alembic's ``MigrationInfo`` of one step (None for a
    stamp, which runs no migration)."""
    if step.is_stamp or step.up_revision_id is None:
        return None
    script = step.revision_map.get_revision(step.up_revision_id)
    module = getattr(script, "module", None)
    downs = step.down_revision_ids
    return {
        "revision": step.up_revision_id,
        "down_revision": downs[0] if downs else None,
        "is_upgrade": step.is_upgrade,
        "breaks_older_builds": bool(getattr(module, "breaks_older_builds", False)),
    }

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mes.auth.roles import Role
from mes.db.base import Base, BigIntPK, TimestampMixin
from mes.db.types import enum_type
from mes.fabs.models import ToolGroup


class AccountKind(enum.StrEnum):
    HUMAN = "human"
    SERVICE = "service"


class User(TimestampMixin, Base):
    """An individual account: a person, or a machine (service account). No shared logins."""

    __tablename__ = "user_account"
    __audit_key__ = "username"
    __audit_redact__ = frozenset({"password_hash"})
    __table_args__ = (
        CheckConstraint("failed_logins >= 0", name="failed_logins_nonnegative"),
        # People log in with a password; machines only with API tokens.
        CheckConstraint("kind = 'human' OR password_hash IS NULL", name="service_has_no_password"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[AccountKind] = mapped_column(enum_type(AccountKind, "account_kind"))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)

    roles: Mapped[list[UserRole]] = relationship(
        back_populates="user", cascade="all, delete-orphan", order_by="UserRole.role"
    )
    certifications: Mapped[list[Certification]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    @property
    def role_set(self) -> frozenset[Role]:
        return frozenset(r.role for r in self.roles)


class UserRole(Base):
    __tablename__ = "user_role"
    __table_args__ = (UniqueConstraint("user_id", "role"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    role: Mapped[Role] = mapped_column(enum_type(Role, "role"))

    user: Mapped[User] = relationship(back_populates="roles")


class Certification(TimestampMixin, Base):
    """An operator's certification to run a tool group (enforced at track-in)."""

    __tablename__ = "certification"
    __table_args__ = (
        UniqueConstraint("user_id", "tool_group_id"),
        CheckConstraint("expires_at IS NULL OR expires_at > certified_at", name="expiry_after"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    tool_group_id: Mapped[int] = mapped_column(ForeignKey("tool_group.id"), index=True)
    certified_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    certified_by: Mapped[str] = mapped_column(String(64))

    user: Mapped[User] = relationship(back_populates="certifications")
    tool_group: Mapped[ToolGroup] = relationship()


class ApiToken(TimestampMixin, Base):
    """A revocable bearer token of a service account; only a digest of its secret is kept."""

    __tablename__ = "api_token"
    __audit_key__ = "public_id"
    __audit_redact__ = frozenset({"secret_digest"})

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    secret_digest: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(64))

    user: Mapped[User] = relationship()

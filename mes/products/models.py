from __future__ import annotations

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mes.db.base import Base, BigIntPK, TimestampMixin


class Product(TimestampMixin, Base):
    """A device type (ISA-95 material definition) that lots are started as."""

    __tablename__ = "product"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)

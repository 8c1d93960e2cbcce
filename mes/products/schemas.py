from __future__ import annotations

from pydantic import BaseModel, Field

from mes.kit.api import CodeStr, Name, ReadModel


class ProductCreate(BaseModel):
    code: CodeStr
    name: Name
    description: str | None = Field(default=None, max_length=2000)


class ProductUpdate(BaseModel):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=2000)


class ProductRead(ReadModel):
    code: str
    name: str
    description: str | None

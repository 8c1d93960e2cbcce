from __future__ import annotations

from pydantic import Field

from mes.kit.api import CodeStr, InputModel, Name, ReadModel


class ProductCreate(InputModel):
    code: CodeStr
    name: Name
    description: str | None = Field(default=None, max_length=2000)


class ProductUpdate(InputModel):
    name: Name | None = None
    description: str | None = Field(default=None, max_length=2000)


class ProductRead(ReadModel):
    code: str
    name: str
    description: str | None

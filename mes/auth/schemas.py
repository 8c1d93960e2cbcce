from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr

from mes.auth.models import AccountKind
from mes.auth.roles import Role
from mes.kit.api import CodeStr, InputModel, Timestamp

Username = Annotated[str, Field(min_length=2, max_length=64, pattern=r"^[a-z0-9][a-z0-9._\-]*$")]
Password = Annotated[SecretStr, Field(min_length=1, max_length=256)]


class SignatureMeaning(enum.StrEnum):
    """What a signer declares by signing (as in 21 CFR Part 11 §11.50)."""

    APPROVAL = "approval"
    REVIEW = "review"
    RESPONSIBILITY = "responsibility"
    AUTHORSHIP = "authorship"


class ESignature(InputModel):
    """The signer's password again (or a login of the last few minutes) plus a reason."""

    reason: str = Field(min_length=3, max_length=500)
    meaning: SignatureMeaning = SignatureMeaning.APPROVAL
    password: Password | None = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class UserCreate(InputModel):
    username: Username
    display_name: str = Field(min_length=1, max_length=128)
    kind: AccountKind = AccountKind.HUMAN
    roles: list[Role] = Field(min_length=1, max_length=6)
    password: Password | None = None
    signature: ESignature


class UserUpdate(InputModel):
    version: int = Field(ge=1, le=2**31 - 1)
    display_name: str | None = Field(default=None, min_length=1, max_length=128)
    roles: list[Role] | None = Field(default=None, min_length=1, max_length=6)
    is_active: bool | None = None
    # An administrator's reset; the user should change it at next login.
    password: Password | None = None
    signature: ESignature


class PasswordChange(InputModel):
    current_password: Password
    new_password: Password


class CertificationRead(BaseModel):
    tool_group: str
    certified_at: datetime
    expires_at: datetime | None
    certified_by: str


class UserRead(BaseModel):
    username: str
    display_name: str
    kind: AccountKind
    roles: list[Role]
    is_active: bool
    locked_until: datetime | None
    version: int
    certifications: list[CertificationRead]


class CertificationCreate(InputModel):
    tool_group: CodeStr
    expires_at: Timestamp | None = None
    signature: ESignature


class CertificationRevoke(InputModel):
    signature: ESignature


class ApiTokenCreate(InputModel):
    name: str = Field(min_length=1, max_length=64)
    expires_at: Timestamp | None = None


class ApiTokenRead(BaseModel):
    public_id: str
    name: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiTokenIssued(ApiTokenRead):
    token: str = Field(description="shown once; only a digest is stored")

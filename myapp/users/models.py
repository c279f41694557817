"""Users and roles."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, Column, ForeignKey, Integer, String, Table, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from myapp.core.crypto import EncryptedField
from myapp.core.db import Model, SoftDeleteMixin, TimestampMixin
from myapp.extensions import db


class UserStatus(StrEnum):
    """Account state; suspended users cannot log in."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


def normalise_phone(value: str) -> str:
    """Keep a leading `+` and the digits: `+1 (555) 123-4567` -> `+15551234567`."""
    value = value.strip()
    return ("+" if value.startswith("+") else "") + re.sub(r"\D", "", value)


user_roles = Table(
    "user_roles",
    db.metadata,
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", Uuid, ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)


class Role(Model):
    """A named set of permissions (the map lives in `myapp.core.permissions`)."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(String(32), unique=True)
    description: Mapped[str] = mapped_column(String(200), default="")


class User(Model, TimestampMixin, SoftDeleteMixin):
    """An account. `email` is stored lower-case; `phone` is encrypted at rest."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
        CheckConstraint("email = lower(email)", name="email_lower"),
    )

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    phone_ciphertext: Mapped[str | None] = mapped_column(Text)
    phone_bidx: Mapped[str | None] = mapped_column(String(64), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=UserStatus.ACTIVE)
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Loaded on access for one user; lists ask for selectinload explicitly (no N+1).
    roles: Mapped[list[Role]] = relationship(secondary=user_roles)

    phone = EncryptedField("users", "phone", normalise=normalise_phone)

    @property
    def role_names(self) -> list[str]:
        """Role names, sorted."""
        return sorted(role.name for role in self.roles)

    @property
    def is_active(self) -> bool:
        """Active and not deleted."""
        return _is_active(self)


def _is_active(user: User | UserRecord) -> bool:
    """Active and not deleted."""
    return user.status == UserStatus.ACTIVE and user.deleted_at is None


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user row as one read saw it, roles included, outside the ORM (read only).

    What the request pipeline loads for its caller on every authenticated request, and
    what the caller's own profile is answered from. It reads like a `User`: `phone` is
    decrypted on access by the same field.
    """

    id: uuid.UUID
    email: str
    name: str
    phone_ciphertext: str | None
    status: str
    token_version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    role_names: list[str]

    phone = EncryptedField("users", "phone", normalise=normalise_phone)

    @property
    def is_active(self) -> bool:
        """Active and not deleted."""
        return _is_active(self)

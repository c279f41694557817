"""Stored files: the blob lives in storage under a random key; this row describes it."""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from myapp.core.db import Model, SoftDeleteMixin, TimestampMixin


class StoredFile(Model, TimestampMixin, SoftDeleteMixin):
    """One file. `filename` is what its owner called it (metadata only, never a path)."""

    __tablename__ = "files"
    __table_args__ = (
        CheckConstraint("size >= 0", name="size"),
        CheckConstraint("length(sha256) = 64", name="sha256"),
    )

    owner_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(200), unique=True)

    @property
    def etag(self) -> str:
        """Strong validator: the content's SHA-256 (a file's bytes never change)."""
        return self.sha256

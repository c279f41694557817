"""Feature flag rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from myapp.core.db import Model, TimestampMixin


def default_rules() -> dict[str, Any]:
    """On for everybody once enabled."""
    return {"roles": [], "userIds": [], "percentage": 100}


class FeatureFlag(Model, TimestampMixin):
    """A flag: `enabled` is the master switch, `rules` narrow who gets it."""

    __tablename__ = "feature_flags"

    key: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(300), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONB, default=default_rules)

"""Feature flag rows and their targeting rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Boolean, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from myapp.core.db import Model, TimestampMixin


@dataclass(frozen=True, slots=True)
class FlagRules:
    """Who gets an enabled flag: listed users, members of roles, or a stable percentage.

    The only place that knows how rules are stored (`rules` JSON column:
    `{"roles": [...], "userIds": [...], "percentage": 0..100}`).
    """

    roles: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    percentage: int = 100

    @classmethod
    def from_stored(cls, data: dict[str, Any] | None) -> FlagRules:
        """Read the JSON column (missing keys take the defaults: on for everybody)."""
        data = data or {}
        return cls(
            roles=tuple(data.get("roles", ())),
            user_ids=tuple(data.get("userIds", ())),
            percentage=int(data.get("percentage", 100)),
        )

    def to_stored(self) -> dict[str, Any]:
        """The JSON column value."""
        return {
            "roles": list(self.roles),
            "userIds": list(self.user_ids),
            "percentage": self.percentage,
        }


class FeatureFlag(Model, TimestampMixin):
    """A flag: `enabled` is the master switch, `rules` narrow who gets it."""

    __tablename__ = "feature_flags"

    key: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(300), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    rules: Mapped[dict[str, Any]] = mapped_column(JSONB, default=lambda: FlagRules().to_stored())

    @property
    def targeting(self) -> FlagRules:
        """The rules, parsed."""
        return FlagRules.from_stored(self.rules)

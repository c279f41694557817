"""Feature flag use cases: evaluate for a caller, list, change (audited, broadcast)."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select

from myapp.audit import service as audit
from myapp.core.config import current_settings
from myapp.core.context import SYSTEM, Actor, bind_actor
from myapp.core.db import unit_of_work
from myapp.extensions import db
from myapp.flags.cache import FlagState, flag_cache
from myapp.flags.models import FeatureFlag, FlagRules

__all__ = ["FlagRules", "evaluate_all", "is_enabled", "list_flags", "seed", "set_flag"]

BUCKETS = 10_000

#: Flags `flask seed` creates: key -> (on in stage/prod, on in local/dev/test, description).
#: New features start on where developers work and off in production until turned on.
SEED_FLAGS = {
    "auth.registration": (True, True, "Self-service sign-up at POST /v1/auth/register"),
    "users.export": (False, True, "CSV export of users (POST /v1/users/export)"),
    "files.upload": (False, True, "File uploads (POST /v1/files)"),
    "chat": (False, True, "Rooms and realtime chat"),
}


def bucket(key: str, user_id: str) -> int:
    """Stable bucket 0..9999 of a user for a flag (independent across flags)."""
    digest = hashlib.sha256(f"{key}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def decide(flag: FlagState | None, actor: Actor) -> bool:
    """On when enabled and the caller is targeted: listed, in a role, or in the rollout."""
    if flag is None or not flag.enabled:
        return False
    rules = flag.rules
    if actor.is_user and actor.id in rules.user_ids:
        return True
    if actor.roles.intersection(rules.roles):
        return True
    if rules.percentage >= 100:
        return True
    if not actor.is_user or rules.percentage <= 0:
        return False
    return bucket(flag.key, actor.id) < rules.percentage * BUCKETS // 100


def _load() -> dict[str, FlagState]:
    rows = db.session.execute(select(FeatureFlag)).scalars()
    return {
        row.key: FlagState(key=row.key, enabled=row.enabled, rules=row.targeting) for row in rows
    }


def is_enabled(key: str, actor: Actor) -> bool:
    """The flag as evaluated for `actor` (unknown flags are off)."""
    return decide(flag_cache().get(_load).get(key), actor)


def evaluate_all(actor: Actor) -> dict[str, bool]:
    """Every flag for `actor`."""
    return {key: decide(flag, actor) for key, flag in sorted(flag_cache().get(_load).items())}


def list_flags() -> list[FeatureFlag]:
    """All flags, by key."""
    return list(db.session.execute(select(FeatureFlag).order_by(FeatureFlag.key)).scalars())


def _snapshot(flag: FeatureFlag) -> dict[str, Any]:
    return {"enabled": flag.enabled, "description": flag.description, "rules": flag.rules}


def set_flag(
    *, key: str, enabled: bool, description: str | None = None, rules: FlagRules | None = None
) -> FeatureFlag:
    """Create or change a flag; audited, then every process is told to reload."""
    with unit_of_work():
        flag = db.session.execute(
            select(FeatureFlag).where(FeatureFlag.key == key).with_for_update()
        ).scalar_one_or_none()
        before = _snapshot(flag) if flag else None
        if flag is None:
            flag = FeatureFlag(key=key, rules=FlagRules().to_stored())
            db.session.add(flag)
        flag.enabled = enabled
        if description is not None:
            flag.description = description
        if rules is not None:
            flag.rules = rules.to_stored()
        db.session.flush()
        audit.record(
            action=audit.AuditAction.UPDATE if before else audit.AuditAction.CREATE,
            target_type="feature_flag",
            target_id=key,
            before=before,
            after=_snapshot(flag),
        )
    flag_cache().publish_change()
    return flag


def seed() -> None:
    """Create the known flags that are missing (existing ones keep their state)."""
    bind_actor(SYSTEM)
    existing = {flag.key for flag in list_flags()}
    dev = current_settings().is_dev
    for key, (in_prod, in_dev, description) in SEED_FLAGS.items():
        if key not in existing:
            set_flag(key=key, enabled=in_dev if dev else in_prod, description=description)

"""Writing and reading the audit trail.

`record` adds a row to the caller's unit of work, so the entry commits or rolls back with
the change it describes. Secret fields are dropped from `before`/`after`; phone numbers are
masked. Other domains name what happened with `audit.AuditAction` (re-exported here: they
reach this domain only through its service).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select

from myapp.audit.models import AuditAction, AuditLog
from myapp.core.context import Actor, current_actor, current_client, current_request_id
from myapp.core.logging import is_secret_key, mask_phone
from myapp.core.paging import Page, offset_page
from myapp.extensions import db

__all__ = ["AuditAction", "list_logs", "record"]
_PHONE_KEYS = frozenset({"phone"})


def _scrub(snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """Drop secrets (passwords, hashes, tokens) and mask phone numbers."""
    if snapshot is None:
        return None
    clean: dict[str, Any] = {}
    for key, value in snapshot.items():
        if is_secret_key(key) or "hash" in key.lower():
            continue
        if key in _PHONE_KEYS and isinstance(value, str):
            value = mask_phone(value)
        clean[key] = value
    return clean


def record(
    *,
    action: AuditAction,
    target_type: str,
    target_id: Any,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> AuditLog:
    """Add one audit row to the current transaction (the caller's unit of work commits it)."""
    actor = actor or current_actor()
    client = current_client()
    row = AuditLog(
        actor_id=uuid.UUID(actor.id) if actor.is_user and actor.id else None,
        actor_type=actor.type,
        action=str(action),
        target_type=target_type,
        target_id=str(target_id) if target_id is not None else None,
        before=_scrub(before),
        after=_scrub(after),
        request_id=current_request_id(),
        ip=client.ip,
        user_agent=client.user_agent,
    )
    db.session.add(row)
    return row


def list_logs(  # noqa: PLR0913 - one keyword per documented filter
    *,
    page: int,
    per_page: int,
    actor_id: uuid.UUID | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page:
    """Audit rows, newest first, filtered."""
    statement = select(AuditLog).order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
    filters = {
        AuditLog.actor_id: actor_id,
        AuditLog.action: action,
        AuditLog.target_type: target_type,
        AuditLog.target_id: target_id,
    }
    for column, value in filters.items():
        if value is not None:
            statement = statement.where(column == value)
    if since is not None:
        statement = statement.where(AuditLog.created_at >= since)
    if until is not None:
        statement = statement.where(AuditLog.created_at < until)
    return offset_page(statement, page=page, per_page=per_page)

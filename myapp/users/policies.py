"""Object-level rules (ABAC) for users. Callers that may not see a user get 404, not 403."""

from __future__ import annotations

from collections.abc import Iterable

from myapp.core import permissions as perms
from myapp.core.context import Actor
from myapp.core.errors import AppError

SELF_EDITABLE = frozenset({"name", "phone"})
WRITER_EDITABLE = frozenset({"name", "phone", "email", "status"})


def is_self(actor: Actor, user: object) -> bool:
    """The actor is this user."""
    return actor.is_user and actor.id == str(user.id)


def can_view(actor: Actor, user: object) -> bool:
    """Self, or anybody with `users:read`."""
    return is_self(actor, user) or actor.can(perms.USERS_READ)


def ensure_visible(actor: Actor, user: object | None) -> None:
    """404 unless the actor may see `user` (hides whether the account exists)."""
    if user is None or not can_view(actor, user):
        raise AppError("NOT_FOUND", "No such user.")


def ensure_may_update(actor: Actor, user: object, fields: Iterable[str]) -> None:
    """Writers change profile and status; a user changes their own name and phone.

    Only holders of `roles:write` (admins) may change an admin.
    """
    ensure_visible(actor, user)
    fields = set(fields)
    if actor.can(perms.USERS_WRITE):
        allowed = WRITER_EDITABLE
        if "admin" in user.role_names and not actor.can(perms.ROLES_WRITE):
            raise AppError("FORBIDDEN", "Only an administrator may change an administrator.")
    elif is_self(actor, user):
        allowed = SELF_EDITABLE
    else:
        raise AppError("NOT_FOUND", "No such user.")
    refused = sorted(fields - allowed)
    if refused:
        raise AppError(
            "FORBIDDEN",
            "You may not change these fields.",
            details=[{"field": f, "message": "Not allowed."} for f in refused],
        )


def sees_full_phone(actor: Actor, user: object) -> bool:
    """Self and admins read the phone number; everybody else gets it masked."""
    return is_self(actor, user) or "admin" in actor.roles


def sees_all_phones(actor: Actor) -> bool:
    """Admins read everybody's phone number (in lists and exports)."""
    return "admin" in actor.roles


def may_include_deleted(actor: Actor) -> bool:
    """Listing deleted users is for those who may delete them."""
    return actor.can(perms.USERS_DELETE)

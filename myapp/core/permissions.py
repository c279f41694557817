"""The role -> permission map. Roles live in the database; what they allow lives here."""

from __future__ import annotations

from collections.abc import Iterable

USERS_READ = "users:read"
USERS_WRITE = "users:write"
USERS_DELETE = "users:delete"
ROLES_WRITE = "roles:write"
AUDIT_READ = "audit:read"
FLAGS_READ = "flags:read"
FLAGS_WRITE = "flags:write"
FILES_MANAGE = "files:manage"  # anybody's files: read and delete
CHAT_MODERATE = "chat:moderate"  # delete anybody's chat messages

ALL_PERMISSIONS = frozenset(
    {
        USERS_READ,
        USERS_WRITE,
        USERS_DELETE,
        ROLES_WRITE,
        AUDIT_READ,
        FLAGS_READ,
        FLAGS_WRITE,
        FILES_MANAGE,
        CHAT_MODERATE,
    }
)

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": ALL_PERMISSIONS,
    "manager": frozenset({USERS_READ, USERS_WRITE, AUDIT_READ, FLAGS_READ}),
    "user": frozenset(),
}
ROLE_DESCRIPTIONS = {
    "admin": "Everything, including deleting users and changing roles",
    "manager": "Reads and edits users, reads the audit log and flags",
    "user": "Their own account only",
}
DEFAULT_ROLE = "user"


def permissions_for(roles: Iterable[str]) -> frozenset[str]:
    """Union of the permissions of `roles` (unknown roles grant nothing)."""
    granted: set[str] = set()
    for role in roles:
        granted |= ROLE_PERMISSIONS.get(role, frozenset())
    return frozenset(granted)

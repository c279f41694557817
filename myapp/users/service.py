"""User use cases: read, list, create, update, soft delete, restore, roles, seed.

Every public function is keyword-only; each top-level use case owns its unit of work and
writes its audit row in the same transaction. Whatever ends a user's tokens sends
`tokens_revoked` inside that transaction (auth ends the user's logins on it).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from blinker import Namespace
from sqlalchemy import ColumnElement, Select, and_, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from myapp.audit import service as audit
from myapp.core import events, passwords
from myapp.core import permissions as perms
from myapp.core.cache import cached
from myapp.core.context import Actor
from myapp.core.db import fetch_row, unit_of_work
from myapp.core.errors import AppError
from myapp.core.guards import outdate_caller
from myapp.core.paging import Page, cursor_page, offset_page
from myapp.extensions import db
from myapp.jobs import service as jobs
from myapp.users import policies
from myapp.users.models import Role, User, UserRecord, UserStatus, user_roles

#: The job kind of the users CSV export (its runner: `myapp.users.export.run_export`).
EXPORT_KIND = "users.export"
_signals = Namespace()
#: Sent (keyword `user_id`) inside the unit of work that made a user's tokens stop working.
tokens_revoked = _signals.signal("users.tokens-revoked")

SORTS = {
    "createdAt": User.created_at,
    "email": User.email,
    "name": User.name,
}


@dataclass(frozen=True, slots=True)
class UserQuery:
    """Filters, sort and paging of a user list."""

    sort: str = "-createdAt"
    status: str | None = None
    role: str | None = None
    q: str | None = None
    include_deleted: bool = False
    page: int = 1
    per_page: int = 20
    cursor: str | None = None
    limit: int | None = None


def normalise_email(email: str) -> str:
    """E-mail addresses are compared case-insensitively: stored lower-case."""
    return email.strip().lower()


def snapshot(user: User) -> dict[str, Any]:
    """What the audit log keeps of a user (secrets dropped, phone masked by the audit)."""
    return {
        "email": user.email,
        "name": user.name,
        "phone": user.phone,
        "status": user.status,
        "roles": user.role_names,
        "deletedAt": user.deleted_at.isoformat() if user.deleted_at else None,
    }


def _audit_user(
    action: audit.AuditAction, user: User, before: dict[str, Any] | None = None
) -> None:
    audit.record(
        action=action, target_type="user", target_id=user.id, before=before, after=snapshot(user)
    )


def _emit(name: str, user: User, **payload: Any) -> None:
    """Record a `user.*` event with the change (ids and field names only, no personal data);
    once it commits, what any process cached about the user is out of date."""
    outdate_caller(user.id)
    events.emit(
        name,
        aggregate_type="user",
        aggregate_id=user.id,
        payload={"userId": str(user.id), **payload},
    )


def find_for_login(*, email: str) -> User | None:
    """The non-deleted user with this e-mail, if any."""
    return db.session.execute(
        select(User).where(User.email == normalise_email(email), User.deleted_at.is_(None))
    ).scalar_one_or_none()


def get_active(*, user_id: uuid.UUID) -> User | None:
    """The user if active and not deleted."""
    user = db.session.get(User, user_id)
    return user if user is not None and user.is_active else None


#: The user columns of a `UserRecord`, in its field order (roles come from a subquery).
_RECORD_COLUMNS = tuple(field.name for field in fields(UserRecord) if field.name != "role_names")


@functools.cache
def _with_roles(also: ColumnElement[bool]) -> Select:
    """Built once per `also` expression, so its SQL text is compiled once."""
    users = User.__table__
    role_names = (
        select(func.array_agg(Role.name))
        .join(user_roles, user_roles.c.role_id == Role.id)
        .where(user_roles.c.user_id == users.c.id)
        .scalar_subquery()
    )
    return select(
        *(users.c[name] for name in _RECORD_COLUMNS), role_names, also.label("also")
    ).where(users.c.id == bindparam("user_id"))


def read_with_roles(
    *, user_id: uuid.UUID, also: ColumnElement[bool], params: dict[str, Any]
) -> tuple[UserRecord, bool] | None:
    """The user (in any state) with roles, and the boolean `also`, in one SQL statement.

    Callers pass what they must check alongside (auth: the login session is open) as a
    constant expression whose bind parameters come in `params` (`user_id` is bound here),
    so the request needs no second round trip. The row is read past the ORM
    (`fetch_row`): this is the read every authenticated request makes.
    """
    row = fetch_row(_with_roles(also), {**params, "user_id": user_id})
    if row is None:
        return None
    *columns, role_names, also_true = row
    return UserRecord(*columns, role_names=sorted(role_names or ())), bool(also_true)


def find_by_phone(*, phone: str) -> User | None:
    """Exact lookup through the blind index (the phone itself is never compared in SQL)."""
    return db.session.execute(
        select(User).where(User.phone_bidx.in_(User.phone.lookup_indexes(phone)))
    ).scalar_one_or_none()


STATS_TTL_SECONDS = 60


def _count_users() -> dict[str, Any]:
    alive = User.deleted_at.is_(None)
    statuses = select(User.status, func.count()).where(alive).group_by(User.status)
    by_status = dict(db.session.execute(statuses).all())
    roles = (
        select(Role.name, func.count(User.id))  # counts the users that join: not deleted
        .select_from(Role)
        .outerjoin(user_roles, user_roles.c.role_id == Role.id)
        .outerjoin(User, and_(User.id == user_roles.c.user_id, alive))
        .group_by(Role.name)
    )
    return {
        "total": sum(by_status.values()),
        "by_status": {str(status): by_status.get(status, 0) for status in UserStatus},
        "by_role": dict(db.session.execute(roles).all()),
    }


@cached("users", ttl=STATS_TTL_SECONDS, key=lambda: "stats")
def user_stats() -> dict[str, Any]:
    """`{total, by_status, by_role}` of users not deleted; cached (single-flight), dropped on
    every `user.*` event (`tasks.drop_cached`). The single-user read is not cached: it is
    one primary-key statement, and its row holds personal data that a cache would copy."""
    return _count_users()


def get_user(*, user_id: uuid.UUID, actor: Actor) -> User:
    """One user the actor may see (404 otherwise; deleted ones only for admins)."""
    user = db.session.get(User, user_id)
    if user is not None and user.deleted_at and not policies.may_include_deleted(actor):
        user = None
    policies.ensure_visible(actor, user)
    return user


def _roles_named(names: Iterable[str]) -> list[Role]:
    names = sorted(set(names))
    unknown = set(names) - set(perms.ROLE_PERMISSIONS)
    if unknown:
        raise AppError(
            "VALIDATION_FAILED",
            details=[{"field": "roles", "message": f"Unknown role: {r}."} for r in sorted(unknown)],
        )
    roles = list(db.session.execute(select(Role).where(Role.name.in_(names))).scalars())
    if len(roles) != len(names):
        raise AppError("SERVICE_UNAVAILABLE", "Roles are not seeded; run `flask seed`.")
    return roles


def _list_statement(query: UserQuery) -> Select:
    statement = select(User).options(selectinload(User.roles))
    if not query.include_deleted:
        statement = statement.where(User.deleted_at.is_(None))
    if query.status:
        statement = statement.where(User.status == query.status)
    if query.role:
        statement = statement.where(
            User.id.in_(
                select(user_roles.c.user_id)
                .join(Role, Role.id == user_roles.c.role_id)
                .where(Role.name == query.role)
            )
        )
    if query.q:
        pattern = "%" + query.q.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        statement = statement.where(or_(User.email.ilike(pattern), User.name.ilike(pattern)))
    return statement


def list_users(*, query: UserQuery, actor: Actor) -> Page:
    """Users for `users:read` holders; roles load in one extra query for the whole page."""
    if query.include_deleted and not policies.may_include_deleted(actor):
        raise AppError("FORBIDDEN", "includeDeleted is for administrators.")
    if query.sort.lstrip("-") not in SORTS:
        raise AppError("VALIDATION_FAILED", details=[{"field": "sort", "message": "Unknown sort."}])
    descending = query.sort.startswith("-")
    column = SORTS[query.sort.lstrip("-")]
    statement = _list_statement(query)
    if query.cursor is not None or query.limit is not None:
        return cursor_page(
            statement,
            keys=[column, User.id],
            cursor=query.cursor,
            limit=query.limit or 20,
            descending=descending,
        )
    order = [column.desc(), User.id.desc()] if descending else [column.asc(), User.id.asc()]
    return offset_page(statement.order_by(*order), page=query.page, per_page=query.per_page)


def _add_user(*, email: str, password: str, name: str, phone: str | None, roles: list[str]) -> User:
    email = normalise_email(email)
    if db.session.execute(select(User.id).where(User.email == email)).first():
        raise AppError("CONFLICT", "This e-mail address is already registered.")
    user = User(email=email, name=name, password_hash=passwords.hash_password(password))
    if phone:
        user.phone = phone
    user.roles = _roles_named(roles)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:
        raise AppError("CONFLICT", "This e-mail address is already registered.") from None
    _audit_user(audit.AuditAction.CREATE, user)
    _emit("user.registered", user, roles=user.role_names)
    return user


def create_user(  # noqa: PLR0913 - keyword-only fields of a new user
    *,
    email: str,
    password: str,
    name: str,
    phone: str | None = None,
    roles: list[str] | None = None,
) -> User:
    """Create an account (409 `CONFLICT` when the e-mail is taken); the user as written."""
    with unit_of_work(keep_loaded=True):
        return _add_user(
            email=email,
            password=password,
            name=name,
            phone=phone,
            roles=roles or [perms.DEFAULT_ROLE],
        )


def register(*, email: str, password: str, name: str) -> User:
    """Self-service sign-up: a plain `user`."""
    return create_user(email=email, password=password, name=name)


def _revoke_tokens(user: User) -> None:
    """Every access token issued before now fails its `ver` check; logins end."""
    user.token_version += 1
    tokens_revoked.send(user_id=user.id)


def update_user(*, user_id: uuid.UUID, changes: dict[str, Any], actor: Actor) -> User:
    """Change profile fields the actor may change (ABAC in `policies`); the user as
    written, ready to present."""
    with unit_of_work(keep_loaded=True):
        user = get_user(user_id=user_id, actor=actor)
        policies.ensure_may_update(actor, user, changes)
        before = snapshot(user)
        if "email" in changes:
            changes = {**changes, "email": normalise_email(changes["email"])}
            taken = select(User.id).where(User.email == changes["email"], User.id != user.id)
            if db.session.execute(taken).first():
                raise AppError("CONFLICT", "This e-mail address is already registered.")
        for field, value in changes.items():
            setattr(user, field, value)
        if (
            changes.get("status") == UserStatus.SUSPENDED
            and before["status"] != UserStatus.SUSPENDED
        ):
            _revoke_tokens(user)
        db.session.flush()
        _audit_user(audit.AuditAction.UPDATE, user, before)
        _emit("user.updated", user, fields=sorted(changes))
        return user


def set_password_hash(*, user: User, password_hash: str) -> None:
    """Store a new password hash and end every login (inside the caller's unit of work)."""
    user.password_hash = password_hash
    _revoke_tokens(user)


def delete_user(*, user_id: uuid.UUID, actor: Actor) -> None:
    """Soft delete: hidden, cannot log in, tokens revoked; restorable."""
    with unit_of_work():
        user = get_user(user_id=user_id, actor=actor)
        if user.deleted_at is not None:
            raise AppError("NOT_FOUND", "No such user.")
        before = snapshot(user)
        user.soft_delete()
        _revoke_tokens(user)
        _audit_user(audit.AuditAction.DELETE, user, before)
        _emit("user.deleted", user)


def restore_user(*, user_id: uuid.UUID, actor: Actor) -> User:
    """Undo a soft delete; the user as written."""
    with unit_of_work(keep_loaded=True):
        user = get_user(user_id=user_id, actor=actor)
        if user.deleted_at is None:
            raise AppError("CONFLICT", "This user is not deleted.")
        before = snapshot(user)
        user.restore()
        _audit_user(audit.AuditAction.RESTORE, user, before)
        _emit("user.restored", user)
        return user


def purge_deleted(*, older_than_days: int, batch_size: int = 200) -> int:
    """Delete for good the users soft-deleted more than `older_than_days` ago (their logins
    and role links go with them, by cascade); one audit row and one `user.purged` event
    each. Batches commit one by one, so an interrupted purge resumes where it stopped."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    purged = 0
    while True:
        with unit_of_work():
            batch = list(
                db.session.scalars(
                    select(User)
                    .where(User.deleted_at.is_not(None), User.deleted_at < cutoff)
                    .order_by(User.deleted_at)
                    .limit(batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            for user in batch:
                # No personal data in the trail of an erasure: the id and the dates only.
                audit.record(
                    action=audit.AuditAction.PURGE,
                    target_type="user",
                    target_id=user.id,
                    before={"deletedAt": user.deleted_at.isoformat()},
                )
                _emit("user.purged", user)
                db.session.delete(user)
        purged += len(batch)
        if len(batch) < batch_size:
            return purged


def set_roles(*, user_id: uuid.UUID, roles: list[str], actor: Actor) -> User:
    """Replace a user's roles; their existing tokens stop working. The user as written."""
    with unit_of_work(keep_loaded=True):
        user = get_user(user_id=user_id, actor=actor)
        before = snapshot(user)
        user.roles = _roles_named(roles)
        if sorted(roles) != before["roles"]:
            _revoke_tokens(user)
        db.session.flush()
        audit.record(
            action=audit.AuditAction.ROLE_CHANGE,
            target_type="user",
            target_id=user.id,
            before={"roles": before["roles"]},
            after={"roles": user.role_names},
        )
        _emit("user.roles_changed", user, roles=user.role_names)
        return user


def start_export(*, actor: Actor) -> uuid.UUID:
    """Queue a CSV export of every user for `actor`; the job's id. Audited."""
    with unit_of_work():
        full = policies.sees_all_phones(actor)
        job = jobs.start_job(
            kind=EXPORT_KIND,
            owner_id=uuid.UUID(actor.id),
            params={"phones": "full" if full else "masked"},
        )
        audit.record(
            action=audit.AuditAction.EXPORT,
            target_type="user",
            target_id=None,
            after={"jobId": str(job.id), "phones": "full" if full else "masked"},
        )
        return job.id


def names_of(*, user_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Display names of the given users that are not deleted (one statement)."""
    wanted = list(user_ids)
    if not wanted:
        return {}
    rows = db.session.execute(
        select(User.id, User.name).where(User.id.in_(wanted), User.deleted_at.is_(None))
    )
    return {user_id: name for user_id, name in rows}

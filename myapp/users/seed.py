"""Reference data for `flask seed`: roles, the first admin, demo users in local/dev.

Running it twice changes nothing: existing rows are left as they are.
"""

from __future__ import annotations

from sqlalchemy import select

from myapp.core import permissions as perms
from myapp.core.config import current_settings
from myapp.core.context import SYSTEM, bind_actor
from myapp.core.db import unit_of_work
from myapp.core.logging import get_logger
from myapp.extensions import db
from myapp.users import service
from myapp.users.models import Role, User

log = get_logger(__name__)

DEMO_USERS = (
    ("manager@example.com", "Morgan Manager", "manager"),
    ("user@example.com", "Uma User", "user"),
)
DEMO_PASSWORD = "dev-only-demo-password"  # noqa: S105 - local/dev only


def seed_roles() -> None:
    """One row per role of the permission map."""
    with unit_of_work():
        existing = set(db.session.execute(select(Role.name)).scalars())
        for name, description in perms.ROLE_DESCRIPTIONS.items():
            if name not in existing:
                db.session.add(Role(name=name, description=description))
                log.info("seed.role_created", role=name)


def ensure_user(*, email: str, password: str, name: str, roles: list[str]) -> bool:
    """Create the user unless the e-mail exists; True when created."""
    if db.session.execute(
        select(User.id).where(User.email == service.normalise_email(email))
    ).first():
        return False
    service.create_user(email=email, password=password, name=name, roles=roles)
    return True


def seed_admin() -> None:
    """The administrator from ADMIN_EMAIL / ADMIN_PASSWORD (skipped when unset)."""
    settings = current_settings()
    if not settings.admin_email or not settings.admin_password:
        log.warning("seed.admin_skipped", reason="ADMIN_EMAIL or ADMIN_PASSWORD not set")
        return
    created = ensure_user(
        email=settings.admin_email,
        password=settings.admin_password.get_secret_value(),
        name="Administrator",
        roles=["admin"],
    )
    log.info("seed.admin", created=created, email=settings.admin_email)


def seed_demo_users() -> None:
    """A manager and a user to click around with, in local and dev only."""
    if current_settings().app_env not in ("local", "dev"):
        return
    for email, name, role in DEMO_USERS:
        ensure_user(email=email, password=DEMO_PASSWORD, name=name, roles=[role])


def seed() -> None:
    """All of the above, as the system actor."""
    bind_actor(SYSTEM)
    seed_roles()
    seed_admin()
    seed_demo_users()

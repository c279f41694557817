"""Password storage details: OWASP parameters, rehash on login, the admin command."""

from __future__ import annotations

from argon2 import PasswordHasher
from sqlalchemy import select

from myapp.core.passwords import hash_password, needs_rehash
from myapp.users.models import User
from tests.conftest import PASSWORD, login


def test_hashes_are_argon2id_at_owasp_parameters(app):
    with app.app_context():
        encoded = hash_password("whatever-password")
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_login_rehashes_a_hash_made_with_weaker_parameters(client, make_user, db_session):
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    user = make_user(email="old@example.com", password_hash=weak)
    assert needs_rehash(user.password_hash)
    login(client, "old@example.com")
    db_session.expire_all()
    upgraded = db_session.get(User, user.id).password_hash
    assert upgraded != weak and not needs_rehash(upgraded)
    login(client, "old@example.com")  # and the new hash verifies


def test_create_admin_command_is_idempotent(make_app, db_session):
    app = make_app()
    args = ["users", "create-admin", "--email", "Ops@Example.com", "--password", "ops-password-1"]
    with app.app_context():
        first = app.test_cli_runner().invoke(args=args)
        second = app.test_cli_runner().invoke(args=args)
    assert (first.exit_code, first.output.strip()) == (0, "created")
    assert second.output.strip() == "exists: left unchanged"
    admin = db_session.execute(select(User).where(User.email == "ops@example.com")).scalar_one()
    assert admin.role_names == ["admin"]
    assert "ops-password-1" not in first.output

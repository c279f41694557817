"""users.phone: encrypted at rest, bound to its row, masked for others, found by blind index."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import Engine, event, text

from myapp.core.crypto import CryptoError, KeyRing, generate_key, key_id_of
from myapp.users import service as users_service
from myapp.users.models import User
from tests.conftest import bearer, idempotency_key, login

PHONE = "+1 (555) 123-5678"
DIGITS = "15551235678"


def raw_rows(db_session) -> list[tuple]:
    return db_session.execute(text("SELECT id, phone_ciphertext, phone_bidx FROM users")).all()


def test_raw_sql_shows_no_plaintext_phone(client, make_user, db_session):
    admin = make_user(roles=("admin",))
    headers = {**bearer(login(client, admin.email)), **idempotency_key()}
    body = {"email": "p@example.com", "password": "good-password", "name": "P", "phone": PHONE}
    assert client.post("/v1/users", json=body, headers=headers).status_code == 201
    dump = " ".join(str(value) for row in raw_rows(db_session) for value in row)
    assert DIGITS not in dump
    (row,) = [r for r in raw_rows(db_session) if r.phone_ciphertext]
    active = os.environ["ENCRYPTION_KEYS"].split(":", 1)[0]
    assert row.phone_ciphertext.startswith(f"v1.{active}.")
    assert DIGITS not in row.phone_ciphertext and DIGITS not in row.phone_bidx


@pytest.mark.parametrize(
    ("viewer", "expected"),
    [
        ("self", "+" + DIGITS),
        ("admin", "+" + DIGITS),
        ("manager", "***-****-5678"),
    ],
)
def test_self_and_admin_read_the_phone_others_get_it_masked(client, make_user, viewer, expected):
    owner = make_user(phone=PHONE)
    caller = owner if viewer == "self" else make_user(roles=(viewer,))
    body = client.get(f"/v1/users/{owner.id}", headers=bearer(login(client, caller.email)))
    assert body.get_json()["data"]["phone"] == expected


def test_lookup_by_phone_goes_through_the_blind_index(app, make_user):
    owner = make_user(phone=PHONE)
    make_user(phone="+44 20 7946 0000")
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, *args):
        statements.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        found = users_service.find_by_phone(phone="+1 555 123 5678")  # other formatting
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert found.id == owner.id
    ((sql, params),) = [s for s in statements if "FROM users" in s[0]]
    assert "phone_bidx" in sql
    assert DIGITS not in str(params)


def test_ciphertext_copied_to_another_row_does_not_decrypt(make_user, db_session):
    source = make_user(phone=PHONE)
    target = make_user(phone="+44 20 7946 0000")
    db_session.execute(
        text("UPDATE users SET phone_ciphertext = :c WHERE id = :t"),
        {"c": source.phone_ciphertext, "t": target.id},
    )
    db_session.expire_all()
    with pytest.raises(CryptoError):
        _ = db_session.get(User, target.id).phone
    assert db_session.get(User, source.id).phone == "+" + DIGITS


def test_rotation_re_encrypts_every_row_with_the_new_key(make_app, make_user, db_session):
    users = [make_user(phone=f"+1555000{n:04d}") for n in range(7)]
    old_ring = os.environ["ENCRYPTION_KEYS"]  # the ring the test app encrypted with
    new_entry = generate_key("k2026")
    rotated_app = make_app(encryption_keys=f"{new_entry},{old_ring}")
    with rotated_app.app_context():
        result = rotated_app.test_cli_runner().invoke(
            args=["crypto", "rotate", "--batch-size", "3"]
        )
        assert result.exit_code == 0, result.output
        assert "re-encrypted 7 values with key k2026" in result.output
        db_session.expire_all()
        rows = [r for r in raw_rows(db_session) if r.phone_ciphertext]
        assert {key_id_of(r.phone_ciphertext) for r in rows} == {"k2026"}
        for n, user in enumerate(users):
            assert db_session.get(User, user.id).phone == f"+1555000{n:04d}"
        again = rotated_app.test_cli_runner().invoke(args=["crypto", "rotate"])
        assert "re-encrypted 0 values" in again.output  # resumable: nothing left to do
    old_only = KeyRing.from_setting(old_ring)
    with pytest.raises(CryptoError):
        old_only.decrypt(rows[0].phone_ciphertext, aad=f"users:phone:{rows[0].id}")


def test_key_ring_rules():
    ring = KeyRing.from_setting(f"{generate_key('a')},{generate_key('b')}")
    token = ring.encrypt("secret", aad="t:c:1")
    assert ring.decrypt(token, aad="t:c:1") == "secret"
    with pytest.raises(CryptoError):
        ring.decrypt(token, aad="t:c:2")
    with pytest.raises(CryptoError):
        ring.decrypt(token[:-4] + "AAAA", aad="t:c:1")
    with pytest.raises(ValueError, match="32 bytes"):
        KeyRing.from_setting("a:c2hvcnQ=")

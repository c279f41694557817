"""A blind-index key change: lookups by phone work before, during and after the re-index."""

from __future__ import annotations

import base64
import os

from myapp.users import service
from tests.conftest import settings_of


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def found(app, phone: str):
    with app.app_context():
        user = service.find_by_phone(phone=phone)
        return user.id if user else None


def reindex(app, *args: str) -> str:
    with app.app_context():  # the CLI runs in the current app: this one
        result = app.test_cli_runner().invoke(args=["crypto", "reindex", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_lookups_by_phone_hold_through_a_blind_index_key_change(
    app, make_app, db_session, make_user
):
    phones = ["+1 555 0100", "+1 555 0101", "+1 555 0102"]
    users = [make_user(phone=phone).id for phone in phones]
    old_key = settings_of(app).blind_index_key.get_secret_value()
    key = new_key()
    switching = make_app(blind_index_key=key, blind_index_key_previous=old_key)

    assert [found(switching, phone) for phone in phones] == users  # before: old indexes

    assert "stopped" in reindex(switching, "--batch-size", "1", "--max-batches", "1")
    assert [found(switching, phone) for phone in phones] == users  # during: mixed

    resumed = reindex(switching, "--batch-size", "1")
    assert "reindexed 2 rows (2 changed): done" in resumed  # went on where it stopped
    assert [found(switching, phone) for phone in phones] == users

    after = make_app(blind_index_key=key)  # the old key retired
    assert [found(after, phone) for phone in phones] == users
    assert [found(app, phone) for phone in phones] == [None, None, None]  # all moved on

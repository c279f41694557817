"""Unit of work, model base and paging helpers against real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    insert,
    inspect,
    select,
)
from sqlalchemy.orm import registry

from myapp.core.db import after_commit, new_id, unit_of_work
from myapp.core.errors import AppError
from myapp.core.paging import Page, cursor_page, decode_cursor, offset_page
from myapp.extensions import db, flag_autocommit_reads

scratch = MetaData()
items = Table(
    "scratch_items",
    scratch,
    Column("id", Uuid, primary_key=True, default=new_id),
    Column("name", String(50), nullable=False),
    Column("created_at", DateTime(timezone=True), server_default=func.now(), nullable=False),
)


class ScratchItem:
    """ORM class on the scratch table (its own registry: not part of the app's models)."""


registry(metadata=scratch).map_imperatively(ScratchItem, items)


@pytest.fixture
def table(db_session):
    """A scratch table that exists only inside the test's rolled-back transaction."""
    scratch.create_all(db_session.bind)  # outside the session, so rollbacks keep it
    return items


def add(session, count, prefix="item"):
    session.execute(
        insert(items), [{"id": new_id(), "name": f"{prefix}-{i}"} for i in range(count)]
    )


def test_ulid_ids_are_uuid_and_time_ordered():
    first, second = new_id(), new_id()
    assert isinstance(first, uuid.UUID) and first < second


def test_unit_of_work_commits_on_success(db_session, table):
    with unit_of_work():
        add(db_session, 2)
    assert db_session.execute(select(func.count()).select_from(table)).scalar_one() == 2


def test_unit_of_work_rolls_back_on_error(db_session, table):
    with pytest.raises(RuntimeError), unit_of_work():
        add(db_session, 3)
        raise RuntimeError("boom")
    assert db_session.execute(select(func.count()).select_from(table)).scalar_one() == 0


def test_nested_units_of_work_commit_once_at_the_outermost(db_session, table):
    with pytest.raises(RuntimeError), unit_of_work():
        with unit_of_work():
            add(db_session, 1, "inner")
        raise RuntimeError("outer fails after inner finished")
    # The inner block did not commit on its own: the outer failure undid it.
    assert db_session.execute(select(func.count()).select_from(table)).scalar_one() == 0


def test_after_commit_runs_once_the_outermost_unit_commits_and_never_on_rollback(db_session, table):
    seen: list[int] = []

    def count() -> int:
        return db_session.execute(select(func.count()).select_from(table)).scalar_one()

    with unit_of_work():
        with unit_of_work():
            add(db_session, 1, "inner")
            after_commit(lambda: seen.append(count()))
        assert seen == []  # the inner block committed nothing
    assert seen == [1]  # ran after the commit, once, seeing the committed row
    with pytest.raises(RuntimeError), unit_of_work():
        after_commit(lambda: seen.append(-1))
        raise RuntimeError("boom")
    with unit_of_work():
        pass
    assert seen == [1]  # the rolled-back one's callback is gone, not run later
    after_commit(lambda: seen.append(0))  # outside a unit of work: at once
    assert seen == [1, 0]


def test_after_commit_with_a_key_runs_once_however_often_it_was_asked(db_session):
    seen: list[str] = []
    with unit_of_work():
        for _ in range(3):
            after_commit(lambda: seen.append("a"), key="a")
        after_commit(lambda: seen.append("b"), key="b")
    assert seen == ["a", "b"]


def test_offset_page_meta(db_session, table):
    add(db_session, 45)
    page = offset_page(select(ScratchItem).order_by(ScratchItem.id), page=3, per_page=20)
    assert isinstance(page, Page)
    assert len(page.items) == 5 and isinstance(page.items[0], ScratchItem)
    assert page.meta == {"page": 3, "per_page": 20, "total": 45, "total_pages": 3}
    empty = offset_page(select(table.c.id).where(table.c.name == "x"), page=1, per_page=20)
    assert empty.meta["total"] == 0 and empty.meta["total_pages"] == 0


def test_cursor_page_sees_every_row_once_while_rows_are_inserted(db_session, table):
    add(db_session, 25, "old")
    seen: list[uuid.UUID] = []
    cursor = None
    pages = 0
    while True:
        page = cursor_page(select(ScratchItem), keys=[ScratchItem.id], cursor=cursor, limit=10)
        seen.extend(item.id for item in page.items)
        pages += 1
        add(db_session, 3, f"new{pages}")  # rows arrive between page requests
        if not page.meta["has_more"]:
            break
        cursor = page.meta["next_cursor"]
    assert len(seen) == len(set(seen))
    total = db_session.execute(select(func.count()).select_from(table)).scalar_one()
    # Keyset paging on time-ordered ids: every row that existed is seen exactly once,
    # and rows inserted later (larger ids) are picked up rather than shifting pages.
    assert len(seen) == total - 3


def test_cursor_on_timestamp_descending(db_session, table):
    add(db_session, 5)
    keys = [ScratchItem.created_at, ScratchItem.id]
    stmt = select(ScratchItem)
    first = cursor_page(stmt, keys=keys, cursor=None, limit=2, descending=True)
    assert first.meta["has_more"] is True
    cursor = first.meta["next_cursor"]
    second = cursor_page(stmt, keys=keys, cursor=cursor, limit=10, descending=True)
    assert second.meta == {"next_cursor": None, "has_more": False}
    first_ids = [i.id for i in first.items]
    second_ids = [i.id for i in second.items]
    # All rows share one created_at (one transaction): the id breaks the tie, descending.
    assert first_ids + second_ids == sorted(first_ids + second_ids, reverse=True)
    assert len(set(first_ids + second_ids)) == 5
    assert datetime.fromisoformat(decode_cursor(cursor, 2)[0]) == first.items[-1].created_at


@pytest.mark.parametrize("cursor", ["%%%", "bm90LWpzb24", "WyJhIl0"])
def test_tampered_cursor_is_bad_request(db_session, table, cursor):
    with pytest.raises(AppError) as caught:
        cursor_page(select(ScratchItem), keys=[ScratchItem.id], cursor=cursor, limit=5)
    assert caught.value.code == "BAD_REQUEST"


def test_a_commit_expires_what_the_unit_wrote_unless_it_keeps_it_loaded(db_session, make_user):
    user = make_user()
    with unit_of_work():
        user.name = "Read again"
    assert "name" in inspect(user).expired_attributes  # the next use reads the row
    assert user.name == "Read again"
    with unit_of_work(keep_loaded=True):
        user.name = "Kept"
    assert not inspect(user).expired_attributes  # presented as written, without a read
    assert user.name == "Kept"
    flag_autocommit_reads(db.session())  # as a GET's session starts, reading in autocommit
    with unit_of_work():  # a unit after such reads expires at its commit like any other
        user.name = "After reads"
    assert "name" in inspect(user).expired_attributes

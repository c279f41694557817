"""The purge of soft-deleted users, and one run per beat tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from myapp.audit.models import AuditLog
from myapp.auth.models import AuthSession
from myapp.core.redis import redis_key
from myapp.core.tasks import TICK_HEADER, celery_app
from myapp.users import service
from myapp.users.models import User
from tests.conftest import redis_of
from tests.support import tasks  # noqa: F401 - registers the test tasks


def test_users_deleted_more_than_30_days_ago_are_erased_with_their_logins(
    app, db_session, make_user
):
    now = datetime.now(UTC)
    gone = make_user(deleted_at=now - timedelta(days=31))
    kept = make_user(deleted_at=now - timedelta(days=29))
    active = make_user()
    db_session.add(AuthSession(user_id=gone.id, expires_at=now + timedelta(days=1)))
    db_session.flush()
    gone_id = gone.id

    with app.app_context():
        assert service.purge_deleted(older_than_days=30) == 1

    ids = set(db_session.scalars(select(User.id)))
    assert gone_id not in ids and {kept.id, active.id} <= ids
    assert db_session.scalar(select(func.count()).where(AuthSession.user_id == gone_id)) == 0
    [row] = db_session.scalars(select(AuditLog).where(AuditLog.target_id == str(gone_id))).all()
    assert row.action == "PURGE" and set(row.before) == {"deletedAt"}  # no personal data
    with app.app_context():
        assert service.purge_deleted(older_than_days=30) == 0  # nothing left to do


def test_a_beat_tick_runs_once_even_when_sent_twice(app):
    task = celery_app(app).tasks["tests.report_context"]
    tick = {TICK_HEADER: "job:2026-01-01T00:00:00"}
    with app.app_context():
        key = redis_key("test", "task", "tick")
    task.apply(args=["tick"], task_id="first", headers=tick)
    assert redis_of(app).get(key) is not None
    redis_of(app).delete(key)
    task.apply(args=["tick"], task_id="second", headers=tick)  # the other beat's copy
    assert redis_of(app).get(key) is None
    task.apply(args=["tick"], task_id="first", headers=tick)  # a retry of the first
    assert redis_of(app).get(key) is not None

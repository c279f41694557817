"""`flask dlq` and `flask outbox` against real PostgreSQL (rows in the test transaction), and
a dead letter whose database is down."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

from myapp.core import (
    events,
    maintenance,  # noqa: F401 - registers the housekeeping task
)
from myapp.core.crypto import crypto, row_aad
from myapp.core.db import new_id, unit_of_work
from myapp.core.deadletters import DEAD, DeadLetter
from myapp.core.tasks import TransientError, celery_app
from myapp.extensions import db
from tests.support import tasks  # noqa: F401 - registers the test tasks


def dead_letter(app, db_session=None, *, failed_days_ago: int = 0) -> uuid.UUID:
    """A dead letter, committed: into the test's transaction with `db_session`, else for
    real (in a database of the test's own)."""
    with app.app_context(), unit_of_work():
        when = datetime.now(UTC) - timedelta(days=failed_days_ago)
        letter_id = new_id()
        letter = DeadLetter(
            id=letter_id,
            task_id="t-1",
            task_name="tests.flaky",
            arguments_masked={"args": ["***(5)"], "kwargs": {}},
            error_type="myapp.core.tasks.TransientError",
            error_message="the remote service answered 503",
            traceback_digest="0123456789abcdef",
            traceback_frames="tasks.py:flaky",
            request_id="req-9",
            attempts=6,
            first_failed_at=when,
            last_failed_at=when,
            status=DEAD,
            replays=0,
        )
        aad = row_aad("dead_letters", "arguments", letter_id)
        plain = json.dumps({"args": ["alice"], "kwargs": {}})
        letter.arguments_ciphertext = crypto().ring.encrypt(plain, aad=aad)
        (db_session or db.session).add(letter)
    return letter_id


def test_replay_with_the_broker_down_says_so_and_leaves_the_letter_dead(make_app, db_session):
    app = make_app(celery_broker_url="redis://127.0.0.1:1/0")
    letter_id = dead_letter(app, db_session)
    with app.app_context():  # the CLI runs in the current app: this one, whose broker is down
        result = app.test_cli_runner().invoke(args=["dlq", "replay", str(letter_id)])
    assert result.exit_code == 1 and "broker unavailable" in result.output
    letter = db_session.get(DeadLetter, letter_id)
    assert (letter.status, letter.replays) == ("dead", 1)


def test_list_show_and_purge(own_database):
    app = own_database.app  # it lists and purges every dead letter: no other test's here
    recent, old = dead_letter(app), dead_letter(app, failed_days_ago=40)
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["dlq", "list"]).output.splitlines()
    assert [line.split()[0] for line in listed] == [str(recent), str(old)]
    shown = json.loads(runner.invoke(args=["dlq", "show", str(recent)]).output)
    assert shown["arguments_masked"] == {"args": ["***(5)"], "kwargs": {}}
    assert "alice" not in json.dumps(shown)
    assert runner.invoke(args=["dlq", "purge", "--before", "30d"]).output.strip() == (
        "purged 1 dead letters"
    )
    with app.app_context():
        remaining = db.session.scalars(select(DeadLetter.id)).all()
    assert remaining == [recent]
    assert runner.invoke(args=["dlq", "purge", "--before", "yesterday"]).exit_code == 2


def emit_pings(app, aggregate_type: str, count: int = 3) -> None:
    """`count` outbox events of `aggregate_type`, ids 0, 1, ..., in one committed unit."""
    with app.app_context(), unit_of_work():
        for n in range(count):
            events.emit("test.ping", aggregate_type=aggregate_type, aggregate_id=n, payload={})


def test_outbox_status_counts_what_waits(own_database):
    app = own_database.app  # the backlog counts every pending event: no other test's here
    emit_pings(app, "status")
    output = app.test_cli_runner().invoke(args=["outbox", "status"]).output
    assert output.startswith("backlog=3 oldest_age_s=")


def test_outbox_resend_makes_recently_published_events_pending_again(app, db_session):
    emit_pings(app, "resend")
    db_session.execute(
        text(
            "UPDATE outbox SET sent_at = now() - make_interval(hours => CAST(aggregate_id AS int))"
            " WHERE aggregate_type = 'resend'"
        )
    )  # published just now, an hour ago and two hours ago
    runner = app.test_cli_runner()
    assert runner.invoke(args=["outbox", "resend", "--since", "90m"]).output.strip() == (
        "2 events will be published again"
    )
    pending = db_session.execute(
        text(
            "SELECT aggregate_id FROM outbox WHERE aggregate_type = 'resend' AND sent_at IS NULL"
            " ORDER BY 1"
        )
    ).scalars()
    assert list(pending) == ["0", "1"]
    assert runner.invoke(args=["outbox", "resend", "--since", "soon"]).exit_code == 2


def test_a_dead_letter_that_cannot_be_written_is_still_logged_without_its_arguments(make_app, logs):
    app = make_app(database_url="postgresql+psycopg://postgres@127.0.0.1:1/gone")
    task = celery_app(app).tasks["tests.flaky"]  # bound to this app, whose database is down
    task.on_failure(TransientError("503"), "task-7", ["k", "ann@example.com"], {}, None)
    [line] = [r for r in logs.records() if r["event"] == "task.dead_letter_unrecorded"]
    assert (line["task"], line["task_id"], line["recording_error"]) == (
        "tests.flaky",
        "task-7",
        "OperationalError",
    )
    assert "ann@" not in logs.text


def test_housekeeping_expires_old_published_events_and_old_receipts(app, db_session):
    emit_pings(app, "expire")
    db_session.execute(
        text(
            "UPDATE outbox"
            " SET sent_at = now() - make_interval(days => CAST(aggregate_id AS int) * 8)"
            " WHERE aggregate_type = 'expire' AND aggregate_id IN ('0', '1')"
        )
    )  # '0': sent just now, '1': sent 8 days ago, '2': not sent yet
    db_session.execute(
        text(
            "INSERT INTO event_receipts (consumer, event_id, handled_at) VALUES"
            " ('old', gen_random_uuid(), now() - interval '31 days'),"
            " ('new', gen_random_uuid(), now() - interval '29 days')"
        )
    )
    result = celery_app(app).tasks["maintenance.expire_events"].apply().get()
    assert result == {"outboxRows": 1, "receipts": 1}
    left = db_session.execute(
        text("SELECT aggregate_id FROM outbox WHERE aggregate_type = 'expire' ORDER BY 1")
    ).scalars()
    assert list(left) == ["0", "2"]
    assert db_session.execute(text("SELECT consumer FROM event_receipts")).scalars().all() == [
        "new"
    ]

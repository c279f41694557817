"""Real workers on both brokers: redelivery after SIGKILL, retries into dead letters and
replay, and the HTTP request id carried into a subscriber's log lines."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from myapp.core.redis import redis_key
from myapp.core.tasks import celery_app
from myapp.users import service as users_service
from tests.conftest import broker_of_kind, libpq_url, redis_of
from tests.support.servers import unused_port, wait_until
from tests.support.workers import Worker

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("committed_rows")]
#: Short limits so that a lost message comes back within seconds on Redis.
SHORT_LIMITS = {
    "CELERY_VISIBILITY_TIMEOUT": "4",
    "CELERY_TASK_SOFT_TIME_LIMIT": "2",
    "CELERY_TASK_TIME_LIMIT": "3",
    "CELERY_RETRY_BACKOFF_MAX": "2",
}


def key_of(app, *parts: str) -> str:
    with app.app_context():
        return redis_key("test", *parts)


def listed(app, *parts: str) -> list[str]:
    return redis_of(app).lrange(key_of(app, *parts), 0, -1)


def query(database_url: str, sql: str, *params) -> list[tuple]:
    with psycopg.connect(libpq_url(database_url)) as conn:
        return conn.execute(sql, params).fetchall()


def test_a_task_whose_worker_is_killed_runs_again_and_its_effect_happens_once(
    make_app, database_url, broker_url, tmp_path
):
    app = make_app(celery_broker_url=broker_url)
    env = {"CELERY_BROKER_URL": broker_url, "OUTBOX_RELAY_IN_WORKER": "false", **SHORT_LIMITS}
    first = Worker(database_url, tmp_path / "a.log", name="a", **env).wait_ready()
    key = str(uuid.uuid4())
    with app.app_context():
        celery_app().send_task("tests.hold_then_effect", args=[key, 1.0])
    wait_until(lambda: listed(app, "started", key), 30, "the first worker to start the task")
    first.kill()  # mid-task: started, no effect yet, nothing acknowledged
    killed_at = time.monotonic()

    second = Worker(database_url, tmp_path / "b.log", name="b", **env).wait_ready()
    try:
        wait_until(lambda: listed(app, "effect", key), 40, "the task to run again")
        redelivered_after = time.monotonic() - killed_at
        time.sleep(1.0)  # room for a wrong third run
    finally:
        second.stop()
    assert listed(app, "started", key) == [str(first.pid), str(second.pid)]
    assert listed(app, "effect", key) == [str(second.pid)]
    receipts = query(
        database_url,
        "SELECT count(*) FROM event_receipts WHERE consumer = 'tests.hold_then_effect'",
    )
    assert receipts == [(1,)]
    if broker_url.startswith("redis"):  # no redelivery flag: it waits out the visibility timeout
        assert redelivered_after >= 4


@dataclass
class SharedWorker:
    """One worker per broker for the tests below (it starts in seconds; they share it)."""

    broker_url: str
    worker: Worker
    metrics_port: int
    mail_dir: Path


@pytest.fixture(scope="module", params=["redis", "amqp"])
def shared(request, database_url, tmp_path_factory) -> Iterator[SharedWorker]:
    directory = tmp_path_factory.mktemp(f"worker-{request.param}")
    broker_url = broker_of_kind(request, request.param)
    metrics_port = unused_port()
    worker = Worker(
        database_url,
        directory / "worker.log",
        name="w",
        CELERY_BROKER_URL=broker_url,
        CELERY_MAX_RETRIES="3",
        CELERY_RETRY_BACKOFF="0.4",
        WORKER_METRICS_PORT=str(metrics_port),
        MAIL_BACKEND="file",
        MAIL_FILE_DIR=str(directory / "mail"),
        **SHORT_LIMITS,
    ).wait_ready()
    try:
        yield SharedWorker(broker_url, worker, metrics_port, directory / "mail")
    finally:
        worker.stop()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:  # noqa: S310
        return response.read().decode()


def test_a_task_that_keeps_failing_backs_off_lands_in_dead_letters_and_replays(
    make_app, database_url, shared
):
    app = make_app(celery_broker_url=shared.broker_url)
    worker, metrics_port = shared.worker, shared.metrics_port
    key = str(uuid.uuid4())
    with app.test_request_context("/v1/meta/error-codes", headers={"X-Request-ID": "dlq-req-1"}):
        app.preprocess_request()
        celery_app().send_task("tests.flaky", args=[key, "ann@example.com"])

    def letters():
        return query(
            database_url,
            "SELECT id, attempts, status, request_id, arguments_masked, arguments_ciphertext,"
            " error_type, first_failed_at < last_failed_at FROM dead_letters"
            " WHERE task_name = 'tests.flaky'",
        )

    wait_until(letters, 30, "a dead letter")
    # The worker counts and logs a dead letter after committing it.
    wait_until(lambda: '"task.dead_lettered"' in worker.output(), 10, "the dead letter's log")
    [(letter_id, attempts, status, request_id, masked, sealed, error, spread)] = letters()
    assert (attempts, status, request_id) == (4, "dead", "dlq-req-1")
    assert masked == {"args": [key, "***(15)"], "kwargs": {}}
    assert "ann@" not in sealed and error == "myapp.core.tasks.TransientError" and spread
    tried = [float(stamp) for stamp in listed(app, "attempts", key)]
    gaps = [later - earlier for earlier, later in zip(tried, tried[1:], strict=False)]
    assert len(gaps) == 3
    assert gaps[0] >= 0.15 and gaps[1] >= gaps[0] * 0.9 and gaps[2] >= gaps[1] * 0.9
    assert gaps[2] > gaps[0]  # growing delays
    assert 'celery_dead_letters_total{task="tests.flaky"} 1.0' in scrape(metrics_port)
    dead_line = next(
        json.loads(line) for line in worker.output().splitlines() if '"task.dead_lettered"' in line
    )
    assert dead_line["request_id"] == "dlq-req-1"
    assert dead_line["dead_letter_id"] == str(letter_id)
    # Celery's own lines ("Task ... received") show the arguments masked.
    assert "***(15)" in worker.output() and "ann@example.com" not in worker.output()

    runner = app.test_cli_runner()
    shown = runner.invoke(args=["dlq", "show", str(letter_id)])
    assert shown.exit_code == 0 and "***(15)" in shown.output and "ann@" not in shown.output
    assert str(letter_id) in runner.invoke(args=["dlq", "list"]).output

    redis_of(app).set(key_of(app, "ok", key), "1")  # the remote service is back
    replayed = runner.invoke(args=["dlq", "replay", str(letter_id)])
    assert replayed.exit_code == 0, replayed.output
    wait_until(lambda: letters()[0][2] == "resolved", 30, "the replay to succeed and be recorded")
    assert len(listed(app, "attempts", key)) == 5
    succeeded = [
        json.loads(line)
        for line in worker.output().splitlines()
        if '"test.flaky.succeeded"' in line
    ]
    assert [line["request_id"] for line in succeeded] == ["dlq-req-1"]


def test_a_task_killed_by_its_hard_time_limit_leaves_a_dead_letter(make_app, database_url, shared):
    app = make_app(celery_broker_url=shared.broker_url)
    key = str(uuid.uuid4())
    with app.app_context():
        sent = celery_app().send_task("tests.hold_then_effect", args=[key, 30.0])  # limit: 3 s

    def letter() -> list[tuple]:
        return query(
            database_url,
            "SELECT task_id, error_type, arguments_masked FROM dead_letters"
            " WHERE task_name = 'tests.hold_then_effect' AND task_id = %s",
            sent.id,
        )

    wait_until(letter, 30, "the killed task's dead letter")
    [(task_id, error_type, masked)] = letter()
    assert error_type.endswith("TimeLimitExceeded")
    assert masked == {"args": [key, 30.0], "kwargs": {}}
    assert listed(app, "effect", key) == []


def test_the_request_id_of_a_registration_reaches_its_subscriber_and_mail_goes_once(
    make_app, database_url, shared
):
    app = make_app(celery_broker_url=shared.broker_url)
    mail_dir, worker = shared.mail_dir, shared.worker
    response = app.test_client().post(
        "/v1/auth/register",
        json={"email": "new@backbone.test", "password": "long-enough-pw", "name": "New"},
        headers={"X-Request-ID": "http-req-42"},
    )
    assert response.status_code == 201
    wait_until(lambda: list(mail_dir.glob("*.eml")), 30, "the welcome e-mail")
    [mail] = mail_dir.glob("*.eml")
    assert "To: new@backbone.test" in mail.read_text()

    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    sent = [line for line in lines if line.get("event") == "mail.sent"]
    assert [line["request_id"] for line in sent] == ["http-req-42"]
    assert "new@backbone.test" not in worker.output()  # masked in logs

    # The same event delivered again (a relay that died before marking it sent).
    user_id = response.get_json()["data"]["id"]
    [(event_id, sequence)] = query(  # this user's event (other tests may leave theirs)
        database_url,
        "SELECT event_id, id FROM outbox WHERE name = 'user.registered' AND aggregate_id = %s",
        user_id,
    )
    with app.app_context():
        celery_app().send_task(
            "users.send_welcome_email",
            kwargs={
                "event": {
                    "id": str(event_id),
                    "name": "user.registered",
                    "aggregateType": "user",
                    "aggregateId": user_id,
                    "sequence": sequence,
                    "payload": {"userId": user_id},
                    "occurredAt": "2026-01-01T00:00:00+00:00",
                    "requestId": "http-req-42",
                }
            },
        )
    wait_until(lambda: '"event.duplicate_skipped"' in worker.output(), 30, "the duplicate")
    assert len(list(mail_dir.glob("*.eml"))) == 1


def test_one_second_after_a_user_change_no_reader_sees_the_old_stats(make_app, shared):
    app = make_app(celery_broker_url=shared.broker_url)
    with app.app_context():
        before = users_service.user_stats()["total"]  # now cached for 60 s
    response = app.test_client().post(
        "/v1/auth/register",
        json={"email": "stats@backbone.test", "password": "long-enough-pw", "name": "S"},
    )
    assert response.status_code == 201
    time.sleep(1.0)  # the event reaches the worker, whose subscriber drops the entry
    with app.app_context():
        assert users_service.user_stats()["total"] == before + 1

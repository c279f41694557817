"""The outbox relay against a real Redis broker of our own, stopped and started."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict

import pytest
from kombu.exceptions import OperationalError as BrokerError

from myapp.core import events, outbox
from myapp.core.db import unit_of_work
from myapp.core.tasks import celery_app
from myapp.subscriptions import SUBSCRIPTIONS
from tests.conftest import settings_of
from tests.support.broker import published
from tests.support.servers import ThrowawayRedis

PING = "test.ping"


@pytest.fixture
def broker(tmp_path):
    server = ThrowawayRedis(data_dir=tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def relay_app(make_app, broker, own_database):
    """The relay on a database of its own: it sends, and these tests count, every pending
    event, so none of another test may be there."""
    app = make_app(
        database_url=own_database.url,
        app_name=own_database.app_name,
        celery_broker_url=broker.url,
    )
    outbox.init_outbox(app, {**SUBSCRIPTIONS, PING: ("tests.record_event",)})
    return app


def declare_queues_as_a_worker_does(app) -> None:
    with app.app_context(), celery_app().connection_for_write() as connection:
        for queue in celery_app().amqp.queues.values():
            queue(connection.default_channel).declare()


def relay_once(app) -> int:
    with app.app_context():
        return outbox.relay_batch(500)


def test_with_the_broker_down_a_registration_still_succeeds_and_its_event_waits(relay_app, broker):
    broker.stop()
    response = relay_app.test_client().post(
        "/v1/auth/register",
        json={"email": "relay-1@example.com", "password": "long-enough-pw", "name": "R"},
        headers={"X-Request-ID": "relay-req-1"},
    )
    assert response.status_code == 201
    with pytest.raises(BrokerError):
        relay_once(relay_app)
    with relay_app.app_context():
        assert outbox.backlog().pending == 1

    broker.start()
    declare_queues_as_a_worker_does(relay_app)
    assert relay_once(relay_app) == 1
    prefix = settings_of(relay_app).redis_prefix
    [message] = published(broker.url, prefix, "low")
    # Each subscriber's message goes to its own queue only (one exchange and key per queue).
    [other] = published(broker.url, prefix, "default")
    assert other.task == "users.drop_cached" and other.kwargs == message.kwargs
    assert published(broker.url, prefix, "chat") == []
    assert message.task == "users.send_welcome_email"
    assert message.kwargs["event"]["name"] == "user.registered"
    assert message.kwargs["event"]["aggregateId"] == response.get_json()["data"]["id"]
    assert message.headers["request_id"] == "relay-req-1"
    with relay_app.app_context():
        assert outbox.backlog().pending == 0


@pytest.mark.slow
def test_no_event_is_lost_or_reordered_by_four_relays_and_a_broker_that_stops_twice(
    relay_app, broker
):
    writes, writers, aggregates = 1000, 4, 40
    relays = [outbox.Relay(relay_app, batch_size=50, poll_seconds=0.2) for _ in range(4)]
    threads = [threading.Thread(target=relay.run, daemon=True) for relay in relays]
    for thread in threads:
        thread.start()

    def write(count: int, seed: int) -> None:
        rng = random.Random(seed)
        with relay_app.app_context():
            for _ in range(count):
                with unit_of_work():
                    aggregate = f"a{rng.randrange(aggregates)}"
                    events.emit(PING, aggregate_type="test", aggregate_id=aggregate, payload={})
                    time.sleep(rng.random() * 0.004)  # commits interleave across writers

    writer_threads = [
        threading.Thread(target=write, args=(writes // writers, n)) for n in range(writers)
    ]
    for thread in writer_threads:
        thread.start()
    for _ in range(2):  # the broker goes away twice while events are being written
        time.sleep(0.8)
        broker.stop()
        time.sleep(1.5)
        broker.start()
    for thread in writer_threads:
        thread.join()

    deadline = time.monotonic() + 60
    with relay_app.app_context():
        while outbox.backlog().pending and time.monotonic() < deadline:
            time.sleep(0.2)
        assert outbox.backlog().pending == 0
    for relay in relays:
        relay.stop()
    for thread in threads:
        thread.join(timeout=10)

    messages = published(broker.url, settings_of(relay_app).redis_prefix, "default")
    delivered = [m.kwargs["event"] for m in messages if m.task == "tests.record_event"]
    assert len({event["id"] for event in delivered}) == writes  # none lost
    by_aggregate: dict[str, list[int]] = defaultdict(list)
    for event in delivered:
        by_aggregate[event["aggregateId"]].append(event["sequence"])
    for sequences in by_aggregate.values():  # a republished event repeats, never overtakes
        assert sequences == sorted(sequences)

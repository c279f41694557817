"""Health routes against real PostgreSQL and Redis, and against a Redis that goes away."""

from __future__ import annotations

import pytest

from myapp.core.tasks import broker_queue_key, celery_app
from myapp.health import service
from tests.conftest import redis_of, settings_of
from tests.support.servers import ThrowawayRedis


def test_live(client):
    response = client.get("/health/live")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_ready_and_detailed_health_when_everything_answers(client):
    assert client.get("/health/ready").status_code == 200
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and body["version"] == "0.1.0"
    assert set(body["checks"]) == {"database", "redis", "queue"}
    for check in body["checks"].values():
        assert check["status"] == "up" and check["latencyMs"] >= 0
    assert body["checks"]["queue"]["depth"] == 0


def test_queue_depth_counts_pending_messages(app, client):
    celery = celery_app(app)
    for _ in range(3):
        celery.send_task("myapp.nothing", queue="low")
    body = client.get("/health").get_json()
    assert body["checks"]["queue"]["depth"] == 3
    prefix = settings_of(app).redis_prefix
    assert redis_of(app).llen(broker_queue_key(prefix, "low")) == 3


def test_database_down_makes_ready_503_and_health_down(make_app):
    client = make_app(database_url="postgresql+psycopg://postgres@127.0.0.1:1/x").test_client()
    assert client.get("/health/ready").status_code == 503
    response = client.get("/health")
    body = response.get_json()
    assert response.status_code == 503 and body["status"] == "down"
    assert body["checks"]["database"] == {
        "status": "down",
        "latencyMs": None,
        "error": "OperationalError",
    }
    assert "127.0.0.1" not in response.get_data(as_text=True)


@pytest.mark.slow
def test_redis_outage_is_reported_and_recovers_by_itself(make_app):
    redis = ThrowawayRedis()
    redis.start()
    try:
        client = make_app(redis_url=redis.url, redis_max_retries=1).test_client()
        assert client.get("/health/ready").status_code == 200
        redis.stop()
        assert client.get("/health/ready").status_code == 503
        body = client.get("/health").get_json()
        assert body["status"] == "degraded"
        assert body["checks"]["redis"]["status"] == "down"
        assert body["checks"]["database"]["status"] == "up"
        redis.start()
        assert client.get("/health/ready").status_code == 200
    finally:
        redis.stop()


def test_draining_fails_readiness_but_not_liveness(client):
    service.start_draining()
    try:
        ready = client.get("/health/ready")
        assert (ready.status_code, ready.get_json()) == (503, {"status": "draining"})
        assert client.get("/health/live").status_code == 200
    finally:
        service._draining.clear()


def test_a_broker_outage_degrades_health_but_leaves_the_pod_ready(make_app):
    client = make_app(celery_broker_url="redis://127.0.0.1:1/0").test_client()
    assert client.get("/health/ready").status_code == 200  # writes still work (outbox)
    response = client.get("/health")
    body = response.get_json()
    assert response.status_code == 503 and body["status"] == "degraded"
    assert body["checks"]["queue"]["status"] == "down"


def test_queue_depth_on_rabbitmq(make_app, broker_url):
    if not broker_url.startswith("amqp"):
        pytest.skip("the Redis broker is covered above")
    app = make_app(celery_broker_url=broker_url)
    celery = celery_app(app)
    for _ in range(2):
        celery.send_task("myapp.nothing", queue="chat")
    body = app.test_client().get("/health").get_json()
    queue = body["checks"]["queue"]
    assert (queue["status"], queue["depth"]) == ("up", 2)

"""Redis restarting under open event streams: they stay open and deliver again."""

from __future__ import annotations

import time

import pytest

from myapp.core.streams import publish
from tests.conftest import bearer, login
from tests.support.servers import ThrowawayRedis
from tests.support.sse import SSEReader

pytestmark = pytest.mark.slow


def test_an_open_stream_survives_a_redis_restart_and_delivers_what_comes_after(
    make_app, db_session, make_user, tmp_path
):
    redis = ThrowawayRedis(data_dir=tmp_path)
    redis.start()
    try:
        app = make_app(redis_url=redis.url, sse_heartbeat_seconds=0.5)
        http = app.test_client()
        user = make_user()
        tokens = login(http, user.email)
        response = http.get("/v1/events/stream", headers=bearer(tokens), buffered=False)
        reader = SSEReader(response.response, response.close)
        reader.next()
        with app.app_context():
            before = publish(str(user.id), "notification", {"n": 1})
        assert reader.next_event().id == before

        redis.stop()
        with app.app_context():
            assert publish(str(user.id), "notification", {"n": 2}) is None  # lost, counted
        time.sleep(1.0)  # the hub's reads fail meanwhile; the stream keeps its heartbeats
        assert not reader.ended.is_set()
        redis.start()  # same port, data kept (AOF)

        deadline = time.monotonic() + 15
        after = None
        while after is None and time.monotonic() < deadline:
            with app.app_context():
                after = publish(str(user.id), "notification", {"n": 3})
            if after is None:
                time.sleep(0.2)
        assert after is not None, "Redis did not come back for the publisher"
        message = reader.next_event(timeout=15)
        assert (message.id, message.data) == (after, {"n": 3})
        reader.stop()
        metrics = http.get("/metrics").get_data(as_text=True)
        assert "sse_publish_errors_total 1.0" in metrics
    finally:
        redis.stop()

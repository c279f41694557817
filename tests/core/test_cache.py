"""The cache against the real Redis: single-flight across two processes, invalidation, a
Redis that is down, and the cached `GET /v1/users/stats`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from myapp.core.cache import cache_store, cached_value, invalidate
from myapp.core.redis import redis_key
from myapp.users import service as users_service
from tests.conftest import bearer, login, redis_of, server_env, settings_of
from tests.support.servers import ThrowawayRedis, uncovered_environ

ROOT = Path(__file__).resolve().parents[2]
STAMPEDE = """
import sys, threading, time
from myapp import create_app
from myapp.core.cache import cached_value
from myapp.core.redis import redis_client, redis_key
app = create_app()
start_at, threads = float(sys.argv[1]), int(sys.argv[2])
results = []

def compute():
    redis_client().incr(redis_key("test", "recomputes"))
    time.sleep(0.5)
    return {"answer": 42}

def read():
    with app.app_context():
        time.sleep(max(0.0, start_at - time.time()))
        results.append(cached_value("test", "stampede", compute, ttl=60, wait=10))

workers = [threading.Thread(target=read) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(sum(1 for r in results if r == {"answer": 42}))
"""


@pytest.mark.slow
def test_a_thousand_concurrent_misses_in_two_processes_compute_once(app):
    settings = settings_of(app)
    env = {**uncovered_environ(), **server_env(settings.database_url), "PYTHONPATH": str(ROOT)}
    start_at = str(time.time() + 4)  # both processes are up by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STAMPEDE, start_at, "500"],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        served = [int(process.communicate(timeout=60)[0].strip()) for process in processes]
    finally:
        for process in processes:  # never left running behind a failed test
            process.kill()
            process.wait()
    assert served == [500, 500]
    with app.app_context():
        assert redis_of(app).get(redis_key("test", "recomputes")) == "1"


def test_invalidate_drops_the_value_and_a_fill_that_began_before_cannot_write(app):
    calls = []

    def compute():
        calls.append(1)
        return len(calls)

    with app.app_context():
        assert cached_value("test", "k", compute, ttl=60) == 1
        assert cached_value("test", "k", compute, ttl=60) == 1  # served from the cache
        invalidate("test", "k")
        assert cached_value("test", "k", compute, ttl=60) == 2

        release = threading.Event()

        def slow():
            release.wait(5)
            return "old"

        def fill():
            with app.app_context():
                invalidate("test", "slow")
                cached_value("test", "slow", slow, ttl=60)

        filler = threading.Thread(target=fill)
        filler.start()
        time.sleep(0.2)
        invalidate("test", "slow")  # the data changed while the fill was computing
        release.set()
        filler.join()
        assert redis_of(app).get(cache_store().key("test", "slow")) is None


def test_with_redis_down_reads_come_from_the_database(make_app, logs):
    down = ThrowawayRedis()
    down.start()
    down.stop()
    app = make_app(cache_redis_url=down.url)
    with app.app_context():
        errors = cache_store().errors
        before = errors._value.get()
        stats = users_service.user_stats()  # counted in PostgreSQL, twice: nothing is kept
        assert users_service.user_stats() == stats
        assert set(stats) == {"total", "by_status", "by_role"} and stats["total"] >= 0
        assert errors._value.get() == before + 2
    warned = [r for r in logs.records() if r["event"] == "cache.unavailable"]
    assert len(warned) == 2 and warned[0]["namespace"] == "users"


def test_user_stats_are_counted_and_cached(client, app, make_user, db_session):
    admin = make_user(roles=("admin",))
    make_user()
    make_user(status="suspended")
    make_user(deleted_at=None)
    headers = bearer(login(client, admin.email))
    first = client.get("/v1/users/stats", headers=headers)
    assert first.status_code == 200
    stats = first.get_json()["data"]
    assert stats["total"] >= 4
    assert stats["byStatus"]["suspended"] >= 1
    assert set(stats["byRole"]) == {"admin", "manager", "user"}

    make_user()  # no event handled here: the cached answer stays until invalidated
    assert client.get("/v1/users/stats", headers=headers).get_json()["data"] == stats
    with app.app_context():
        invalidate("users", "stats")
    after = client.get("/v1/users/stats", headers=headers).get_json()["data"]
    assert after["total"] == stats["total"] + 1
    plain = make_user()
    denied = client.get("/v1/users/stats", headers=bearer(login(client, plain.email)))
    assert denied.status_code == 403

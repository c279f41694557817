"""Distributed locks against the real Redis: exclusion, expiry, auto-extend, fencing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from myapp.core.locks import FencedResource, LockNotAcquiredError, distributed_lock
from tests.conftest import redis_of, server_env, settings_of

ROOT = Path(__file__).resolve().parents[2]


def test_two_holders_never_overlap(app):
    inside: list[int] = []
    overlaps: list[int] = []
    tokens: list[int] = []

    def work(n: int) -> None:
        with app.app_context():
            for _ in range(10):
                with distributed_lock("counter", ttl=5, wait=10) as held:
                    inside.append(n)
                    if len(inside) > 1:
                        overlaps.append(n)
                    tokens.append(held.token)
                    time.sleep(0.005)
                    inside.remove(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert tokens == sorted(tokens) and len(set(tokens)) == 40  # each holder a newer token


def test_a_taken_lock_is_refused_without_waiting(app):
    with app.app_context(), distributed_lock("busy"):
        started = time.monotonic()
        with pytest.raises(LockNotAcquiredError), distributed_lock("busy"):
            pass
        assert time.monotonic() - started < 0.5


@pytest.mark.slow
def test_a_holder_that_dies_releases_by_ttl(app):
    """A real process takes the lock and is killed: nobody releases it but its TTL."""
    settings = settings_of(app)
    script = (
        "import os, sys, time\n"
        "from myapp.core.locks import distributed_lock\n"
        "from myapp import create_app\n"
        "app = create_app()\n"
        "with app.app_context(), distributed_lock('doomed', ttl=2):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, **server_env(settings.database_url), "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        holder.kill()
        holder.wait(timeout=10)
        with app.app_context():
            with pytest.raises(LockNotAcquiredError), distributed_lock("doomed"):
                pass
            started = time.monotonic()
            with distributed_lock("doomed", wait=5):
                freed_after = time.monotonic() - started
        assert freed_after < 2.5
    finally:
        holder.kill()


def test_auto_extend_keeps_a_long_holder_and_a_stale_holder_is_fenced_off(app):
    with app.app_context():
        resource = FencedResource("report")
        with distributed_lock("long", ttl=0.6, auto_extend=True) as long_holder:
            time.sleep(1.5)  # well past its TTL: still held
            with pytest.raises(LockNotAcquiredError), distributed_lock("long"):
                pass
            assert resource.accept(long_holder.token)

        # A holder that paused past its TTL: the next one takes over and writes first.
        with distributed_lock("stale", ttl=0.3) as stale:
            time.sleep(0.5)
            with distributed_lock("stale") as fresh:
                assert resource.accept(fresh.token)
            assert not resource.accept(stale.token)  # its late write is refused
        assert redis_of(app).get(resource.key) == str(fresh.token)

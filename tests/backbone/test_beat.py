"""Two beat processes at once (a rolling update): every tick runs once; when the one that
holds the lock is killed, the other carries on once the lock lapses (its timeout plus at
most one beat loop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from myapp.core.redis import redis_key
from tests.conftest import redis_of, server_env
from tests.support.servers import stop_process, wait_until
from tests.support.workers import Worker

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
#: Seconds; the app's is 30. Still twice `beat_max_loop_interval` (5 s), as RedBeat needs.
LOCK_TIMEOUT = 10


def start_beat(database_url: str, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "celery"),
            # No `-S`: the app's own configuration picks RedBeat.
            *("-A", "tests.support.beat_app.celery", "beat", "--loglevel", "INFO"),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            **server_env(database_url, LOG_LEVEL="INFO"),
            "PYTHONPATH": str(ROOT),
            "TEST_BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
        },
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )


def test_two_beats_run_each_tick_once_and_survive_losing_the_lock_holder(
    app, database_url, tmp_path
):
    def ticks() -> list[tuple[str, float]]:
        with app.app_context():
            key = redis_key("test", "ticks")
        return [tuple(json.loads(item)) for item in redis_of(app).lrange(key, 0, -1)]

    worker = Worker(database_url, tmp_path / "worker.log", name="w", OUTBOX_RELAY_IN_WORKER="false")
    logs = [tmp_path / "beat-a.log", tmp_path / "beat-b.log"]
    beats = [start_beat(database_url, path) for path in logs]  # while the worker starts
    try:
        worker.wait_ready()
        wait_until(lambda: ticks(), 30, "the first tick")
        time.sleep(12)  # both beats alive: the second tries the lock every loop (5 s)
        seen = ticks()
        names = [tick for tick, _ in seen]
        assert len(names) == len(set(names))  # no tick ran twice
        assert len(names) >= 5  # and none was skipped (a 2 s job over ~12 s: 7)

        holder = next(
            n for n, path in enumerate(logs) if "Acquired lock" in path.read_text(errors="replace")
        )
        beats[holder].kill()
        killed_at = time.time()
        wait_until(lambda: any(at > killed_at + 2.5 for _, at in ticks()), 60, "the other beat")
        taken_over_after = min(at for _, at in ticks() if at > killed_at + 2.5) - killed_at
        names = [tick for tick, _ in ticks()]
        assert len(names) == len(set(names))
        assert taken_over_after < LOCK_TIMEOUT + 5 + 3  # + one beat loop + a tick's period
    finally:
        for beat in beats:
            stop_process(beat)
        worker.stop()
    other = logs[1 - holder].read_text(errors="replace")
    assert "Acquired lock" in other  # the survivor took over the schedule
    assert "BlockingSwitchOutError" not in other  # beat shuts down cleanly (no gevent)

# ruff: noqa: N999 - the issue names this file bench/async.py (run with -m)
"""The async backbone under load, production profile, Redis broker (`--broker` for another).

1. Task throughput: N no-op tasks queued, then one worker (gevent pool, the production
   concurrency) started; tasks/s from its first to its last acknowledgement. Rounds
   alternate with bare Celery on the same broker and settings (`bench/celery_peer.py`),
   and the ratio is printed. Goal >= 1,000 tasks/s.
2. Relay throughput: N pending `user.registered` events (one subscriber each), then one
   and then two `flask outbox relay` processes; events/s. Goal >= 2,000.
3. Commit-to-subscriber latency: events committed at a steady rate while a worker runs its
   relay and the subscriber; time from the writer's commit to the subscriber's start,
   p50 and p99. Goal p99 < 500 ms.

    .venv/bin/python -m bench.async [--tasks 5000] [--events 20000] [--rate 200] [--seconds 10]
                                    [--rounds 3] [--broker URL] [--profile DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench._profile import py_spy, top_frames
from bench._report import report_logger
from bench._setup import prod_secrets, server_env

log = report_logger("bench.async")
ROOT = Path(__file__).resolve().parents[1]
PEER_PREFIX = "bench-peer:"  # bench/celery_peer.py's key prefix


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Worker:
    """A `celery worker` (gevent pool, the production concurrency), output to a file."""

    def __init__(self, app_path: str, queues: str, env: dict[str, str], log_path: Path) -> None:
        self._out = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                *("-A", app_path, "worker", "--pool", "gevent"),
                *("--concurrency", env.get("CELERY_CONCURRENCY", "50")),
                *("--queues", queues, "--hostname", "bench@%h"),
                *("--without-heartbeat", "--without-mingle", "--without-gossip"),
                *("--loglevel", "WARNING"),
            ],
            cwd=ROOT,
            env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        """Warm shutdown."""
        self.process.terminate()
        self.process.wait(timeout=60)
        self._out.close()


@dataclass(frozen=True)
class Side:
    """What one side of the task-throughput comparison runs."""

    name: str
    celery: Any  # a Celery app to publish with
    task: str
    worker_app: str
    queues: str
    waiting: str  # its queue's Redis list
    unacked: str  # kombu's unacknowledged index


def sides(app, broker_url: str) -> tuple[Side, Side]:
    """The project's worker, and bare Celery (`bench/celery_peer.py`) on the same broker."""
    from celery import Celery

    from myapp.core.config import current_settings
    from myapp.core.tasks import celery_app

    with app.app_context():
        prefix = f"{current_settings().redis_prefix}celery:"
        project = Side(
            "project",
            celery_app(),
            "bench.noop",
            "bench.async_worker.celery",
            "default,chat,low",
            f"{prefix}default",
            f"{prefix}unacked_index",
        )
    peer_celery = Celery("peer", broker=broker_url)
    peer_celery.conf.broker_transport_options = {"global_keyprefix": PEER_PREFIX}
    peer = Side(
        "peer",
        peer_celery,
        "peer.noop",
        "bench.celery_peer.peer",
        "celery",
        f"{PEER_PREFIX}celery",
        f"{PEER_PREFIX}unacked_index",
    )
    return project, peer


def task_throughput(
    app, side: Side, env: dict[str, str], tasks: int, workdir: Path, profile: Path | None = None
) -> float:
    """Queue `tasks` no-ops, start a worker, time it from first to last acknowledgement."""
    broker = redis.Redis.from_url(env["REDIS_URL"])
    broker.delete(side.waiting, side.unacked)
    with app.app_context(), side.celery.producer_or_acquire() as producer:
        for _ in range(tasks):
            side.celery.send_task(side.task, producer=producer)
    extra = {"OUTBOX_RELAY_IN_WORKER": "false", "PEER_BROKER_URL": env["REDIS_URL"]}
    worker = Worker(side.worker_app, side.queues, {**env, **extra}, workdir / f"{side.name}.log")
    try:
        while broker.llen(side.waiting) == tasks:  # until the worker takes its first
            time.sleep(0.001)
        first = time.perf_counter()
        recorder = py_spy(worker.process.pid, 8, profile / "worker.txt") if profile else None
        while broker.llen(side.waiting) or broker.zcard(side.unacked):
            time.sleep(0.005)
        elapsed = time.perf_counter() - first
        if recorder:
            recorder.wait()
    finally:
        worker.stop()
    return tasks / elapsed


def relay_throughput(
    app, events: int, relays: int, workdir: Path, profile: Path | None = None
) -> float:
    """`events` pending `user.registered` events (2 per user id, so every batch meets
    aggregates with a second event waiting), then `relays` processes of `flask outbox
    relay`; events/s from the first batch marked sent to the last (start-up excluded)."""
    from sqlalchemy import text

    from myapp.core.db import unit_of_work
    from myapp.extensions import db

    with app.app_context(), unit_of_work():
        db.session.execute(text("DELETE FROM outbox"))
        db.session.execute(
            text(
                "INSERT INTO outbox (event_id, name, aggregate_type, aggregate_id, payload)"
                " SELECT gen_random_uuid(), 'user.registered', 'user', (n / 2)::text,"
                " jsonb_build_object('userId', gen_random_uuid()::text)"
                " FROM generate_series(1, :n) AS n"
            ),
            {"n": events},
        )
    processes = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "flask"), "outbox", "relay"],
            cwd=ROOT,
            env={**os.environ, "FLASK_APP": "myapp", "OUTBOX_BATCH_SIZE": "500"},
            stdout=(workdir / f"relay-{n}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for n in range(relays)
    ]
    recorder = py_spy(processes[0].pid, 6, profile / "relay.txt") if profile else None
    pending = text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    try:
        with app.app_context():

            def waiting() -> int:
                count = db.session.execute(pending).scalar()
                db.session.rollback()
                return count

            deadline = time.monotonic() + 300
            while (left := waiting()) == events and time.monotonic() < deadline:
                time.sleep(0.005)
            started, already_sent = time.perf_counter(), events - left
            while waiting() and time.monotonic() < deadline:
                time.sleep(0.05)  # light polling: the relay shares the machine
            elapsed = time.perf_counter() - started
    finally:
        if recorder:
            recorder.wait()
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    return (events - already_sent) / elapsed


def latency(app, env: dict[str, str], rate: float, seconds: float, workdir: Path) -> list[float]:
    """Commit events at `rate`/s for `seconds` while a worker relays and handles them."""
    from myapp.core import events
    from myapp.core.db import unit_of_work
    from myapp.core.redis import redis_client, redis_key

    worker = Worker("bench.async_worker.celery", "default,chat,low", env, workdir / "latency.log")
    committed: dict[str, float] = {}
    try:
        time.sleep(8)  # the worker boots and its relay listens
        with app.app_context():
            arrived_key = redis_key("bench", "arrived")
            redis_client().delete(arrived_key)
            interval, next_at = 1 / rate, time.perf_counter()
            deadline = next_at + seconds
            while next_at < deadline:
                with unit_of_work():
                    event_id = events.emit(
                        "bench.ping",
                        aggregate_type="bench",
                        aggregate_id=len(committed),
                        payload={},
                    )
                committed[str(event_id)] = time.time()
                next_at += interval
                time.sleep(max(0.0, next_at - time.perf_counter()))
            wait_until = time.monotonic() + 30
            while (
                redis_client().hlen(arrived_key) < len(committed) and time.monotonic() < wait_until
            ):
                time.sleep(0.1)
            arrived = redis_client().hgetall(arrived_key)
    finally:
        worker.stop()
    missing = len(committed) - len(arrived)
    if missing:
        log.info("  MISSING: %d of %d events never reached the subscriber", missing, len(committed))
    return [(float(arrived[key]) - at) * 1000 for key, at in committed.items() if key in arrived]


def main() -> None:
    """Run the three measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--broker", help="CELERY_BROKER_URL (default: the app's Redis)")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the worker and the relay (extra round)"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-async-"))
    env = server_env(
        "async",
        APP_ENV="prod",
        LOG_LEVEL="WARNING",
        **prod_secrets(),
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "prometheus"),
        **({"CELERY_BROKER_URL": args.broker} if args.broker else {}),
    )
    os.environ.update(env)
    from bench._async_tasks import BENCH_SUBSCRIPTIONS
    from myapp import create_app
    from myapp.core.outbox import init_outbox

    app = create_app()
    init_outbox(app, BENCH_SUBSCRIPTIONS)  # what the bench worker has too
    log.info("async backbone, production profile, broker %s", args.broker or "Redis (REDIS_URL)")

    project, peer = sides(app, env["REDIS_URL"])
    rates: dict[str, list[float]] = {"project": [], "peer": []}
    for _ in range(args.rounds):  # alternating, so noise hits both
        for side in (project, peer):
            rates[side.name].append(task_throughput(app, side, env, args.tasks, workdir))
    for name, measured in rates.items():
        log.info(
            "1. no-op tasks, one worker, %-7s median %.0f tasks/s (rounds: %s)",
            name,
            statistics.median(measured),
            ", ".join(f"{rate:.0f}" for rate in measured),
        )
    log.info(
        "   project/peer %.2f; goal >= 1000 tasks/s for the project",
        statistics.median(rates["project"]) / statistics.median(rates["peer"]),
    )
    from myapp.core.tasks import celery_app

    for relays in (1, 2):
        rounds = [relay_throughput(app, args.events, relays, workdir) for _ in range(args.rounds)]
        with app.app_context():
            celery_app().control.purge()
        log.info(
            "2. outbox relay, %d relay process(es): median %.0f events/s (rounds: %s;"
            " goal >= 2000)",
            relays,
            statistics.median(rounds),
            ", ".join(f"{rate:.0f}" for rate in rounds),
        )
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        task_throughput(app, project, env, args.tasks * 4, workdir, args.profile)
        relay_throughput(app, args.events, 1, workdir, args.profile)
        with app.app_context():
            celery_app().control.purge()
        for name in ("worker", "relay"):
            log.info("profile of the %s (share of samples holding the frame):", name)
            for share, frame in top_frames(args.profile / f"{name}.txt", 25):
                log.info("  %5.1f%%  %s", share * 100, frame[:150])
    samples = latency(app, env, args.rate, args.seconds, workdir)
    log.info(
        "3. commit -> subscriber, %d events at %.0f/s: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
        " (goal p99 < 500 ms)",
        len(samples),
        args.rate,
        percentile(samples, 0.50),
        percentile(samples, 0.99),
        max(samples),
    )


if __name__ == "__main__":
    main()

# ruff: noqa: N999 - the issue names this file bench/async.py (run with -m)
"""The async backbone under load, production profile, Redis broker (`--broker` for another).

1. Task throughput: N no-op tasks queued, then one worker (gevent pool, the production
   concurrency) started; tasks/s from its first to its last acknowledgement. Goal >= 1,000.
2. Relay throughput: N pending outbox events (one subscriber each), one relay in this
   process publishing them; events/s. Goal >= 2,000.
3. Commit-to-subscriber latency: events committed at a steady rate while a worker runs its
   relay and the subscriber; time from the writer's commit to the subscriber's start,
   p50 and p99. Goal p99 < 500 ms.

    .venv/bin/python -m bench.async [--tasks 5000] [--events 20000] [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench._report import report_logger
from bench._setup import prod_secrets, server_env

log = report_logger("bench.async")
ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Worker:
    """`celery -A bench.async_worker.celery worker` as the worker role runs it."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._out = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                *("-A", "bench.async_worker.celery", "worker", "--pool", "gevent"),
                *("--concurrency", env.get("CELERY_CONCURRENCY", "50")),
                *("--queues", "default,chat,low", "--hostname", "bench@%h"),
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


def queue_keys(prefix: str) -> tuple[str, str]:
    """The default queue's list and the unacknowledged index (Redis broker)."""
    return f"{prefix}celery:default", f"{prefix}celery:unacked_index"


def task_throughput(app, env: dict[str, str], tasks: int, workdir: Path) -> float:
    """Queue `tasks` no-ops, start a worker, time it from first to last acknowledgement."""
    from myapp.core.config import current_settings
    from myapp.core.tasks import celery_app

    with app.app_context():
        prefix = current_settings().redis_prefix
        celery = celery_app()
        celery.control.purge()
        started = time.perf_counter()
        with celery.producer_or_acquire() as producer:
            for _ in range(tasks):
                celery.send_task("bench.noop", producer=producer)
        published = tasks / (time.perf_counter() - started)
    broker = redis.Redis.from_url(env["REDIS_URL"])
    waiting, unacked = queue_keys(prefix)
    worker = Worker({**env, "OUTBOX_RELAY_IN_WORKER": "false"}, workdir / "tasks.log")
    try:
        while broker.llen(waiting) == tasks:  # until the worker takes its first
            time.sleep(0.001)
        first = time.perf_counter()
        while broker.llen(waiting) or broker.zcard(unacked):
            time.sleep(0.005)
        elapsed = time.perf_counter() - first
    finally:
        worker.stop()
    log.info("  publish: %.0f tasks/s from one process", published)
    return tasks / elapsed


def relay_throughput(app, events: int) -> float:
    """Insert `events` pending events (2 per aggregate), relay them all with one relay."""
    from sqlalchemy import text

    from myapp.core import outbox
    from myapp.core.db import unit_of_work
    from myapp.extensions import db

    with app.app_context():
        with unit_of_work():
            db.session.execute(
                text(
                    "INSERT INTO outbox (event_id, name, aggregate_type, aggregate_id, payload)"
                    " SELECT gen_random_uuid(), 'bench.ping', 'bench', (n / 2)::text, '{}'"
                    " FROM generate_series(1, :n) AS n"
                ),
                {"n": events},
            )
        started = time.perf_counter()
        relayed = 0
        while relayed < events:
            relayed += outbox.relay_batch(500)
        return events / (time.perf_counter() - started)


def latency(app, env: dict[str, str], rate: float, seconds: float, workdir: Path) -> list[float]:
    """Commit events at `rate`/s for `seconds` while a worker relays and handles them."""
    from myapp.core import events
    from myapp.core.db import unit_of_work
    from myapp.core.redis import redis_client, redis_key

    worker = Worker(env, workdir / "latency.log")
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
    import bench.async_worker as bench_worker  # the same app and subscriptions as the worker

    app = bench_worker.app
    log.info("async backbone, production profile, broker %s", args.broker or "Redis (REDIS_URL)")

    rates = [task_throughput(app, env, args.tasks, workdir) for _ in range(args.rounds)]
    log.info(
        "1. no-op tasks, one worker: median %.0f tasks/s (rounds: %s; goal >= 1000)",
        statistics.median(rates),
        ", ".join(f"{rate:.0f}" for rate in rates),
    )
    relays = [relay_throughput(app, args.events) for _ in range(args.rounds)]
    log.info(
        "2. outbox relay, one relay: median %.0f events/s (rounds: %s; goal >= 2000)",
        statistics.median(relays),
        ", ".join(f"{rate:.0f}" for rate in relays),
    )
    from myapp.core.tasks import celery_app

    with app.app_context():
        celery_app().control.purge()
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

"""Cooperative I/O under gunicorn: N concurrent requests that each hold `pg_sleep(S)`.

Runs the real app (plus the test-only `/_test/sleep` route) under our gunicorn config with
one gevent worker, twice in the same run: as shipped, and with psycopg imported by the
master before the worker patches (what preloading, or a config file that imports the app,
does: the pitfall docs/architecture.md warns about). Prints wall-clock medians and their ratio. With
cooperative I/O the total is close to one sleep; with the blocking wait function it is N.

    .venv/bin/python -m bench.gevent_io [--requests 10] [--sleep 0.5] [--rounds 3]

Needs PostgreSQL and Redis at DATABASE_URL / REDIS_URL (run it inside
`python -m myapp.devservices run -- ...` on a machine without them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from bench._report import report_logger
from myapp.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from tests.support.servers import get, gunicorn

log = report_logger("bench.gevent_io")


def one_round(base: str, requests: int, sleep: float) -> float:
    """Fire `requests` concurrent sleeps; return the wall time of the whole batch."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=requests) as pool:
        answers = list(
            pool.map(lambda _: get(f"{base}/_test/sleep?seconds={sleep}"), range(requests))
        )
    elapsed = time.perf_counter() - started
    if any(status != 200 for status, _ in answers):
        raise SystemExit(f"a request failed: {answers}")
    return elapsed


def measure(app: str, args: argparse.Namespace, env: dict[str, str], extra: str = "") -> float:
    """Median batch time for one WSGI module (`extra`: more gunicorn arguments)."""
    env = {**env, "GUNICORN_TIMEOUT": "120", "GUNICORN_CMD_ARGS": extra}
    with gunicorn(app, workers=1, env=env) as (_, base):
        one_round(base, 2, 0.01)  # warm the pool
        times = [one_round(base, args.requests, args.sleep) for _ in range(args.rounds)]
    return statistics.median(times)


def main() -> int:
    """Measure, print, and exit non-zero when gevent does not overlap the sleeps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = {
        "APP_ENV": "test",
        "DATABASE_URL": os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
        "REDIS_URL": os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": "/tmp/myapp-bench-prometheus",  # noqa: S108
    }
    gevent_s = measure("tests.support.wsgi_app:app", args, env)
    # The baseline preloads on purpose, to reproduce the pitfall; never preload for real.
    sync_s = measure("bench.wsgi_import_order_bug:app", args, env, extra="--preload")
    log.info(
        "%d concurrent requests x pg_sleep(%.2fs), 1 worker, median of %d rounds:",
        args.requests,
        args.sleep,
        args.rounds,
    )
    log.info("  as shipped (worker patches, then imports): %.3f s", gevent_s)
    log.info("  psycopg imported by the master first:      %.3f s (the pitfall)", sync_s)
    log.info("  speed-up:      %.1fx", sync_s / gevent_s)
    return 0 if gevent_s < 3 * args.sleep else 1


if __name__ == "__main__":
    sys.exit(main())

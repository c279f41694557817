"""Login throughput, and whether password hashing stalls the gevent hub.

Starts the production app (`wsgi:app`, our gunicorn config, 2 gevent workers) on its own
database, then in one run:

1. idle: p50/p99 of `GET /health/live` with nothing else running (baseline);
2. load: 16 client threads log in back to back for `--seconds`; logins per second;
3. the same load again while a probe thread measures `GET /health/live` latency.

Argon2id verification runs in each worker's native-thread pool, so the hub keeps
answering probes while 16 logins hash. A stalled hub shows up as a p99 near one hash time
or worse.

    .venv/bin/python -m bench.auth_login [--seconds 10] [--clients 16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from bench._report import report_logger
from bench._setup import EMAIL, PASSWORD, server_env
from tests.support.servers import gunicorn

log = report_logger("bench.auth_login")


def timed_get(url: str) -> float:
    """Seconds one GET takes (status must be 200)."""
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
        response.read()
        assert response.status == 200
    return time.perf_counter() - started


def login_once(base: str) -> bool:
    """One login; True on 200."""
    body = json.dumps({"email": EMAIL, "password": PASSWORD}).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback only
        f"{base}/v1/auth/login", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.status == 200


def login_load(base: str, clients: int, seconds: float, stop: threading.Event) -> int:
    """`clients` threads logging in until `seconds` pass; number of successful logins."""
    deadline = time.monotonic() + seconds

    def worker() -> int:
        done = 0
        while time.monotonic() < deadline and not stop.is_set():
            done += login_once(base)
        return done

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return sum(pool.map(lambda _: worker(), range(clients)))


def probe(base: str, seconds: float, interval: float = 0.02) -> list[float]:
    """Latency of `/health/live` every `interval` for `seconds`."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(timed_get(f"{base}/health/live"))
        time.sleep(interval)
    return samples


def p(samples: list[float], q: float) -> float:
    """Percentile in milliseconds."""
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1] * 1000


def main() -> int:
    """Run the three phases and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    env = server_env(
        "auth",
        RATELIMIT_LOGIN_PER_IP="1000000/minute",
        RATELIMIT_LOGIN_PER_ACCOUNT="1000000/minute",
    )
    with gunicorn("wsgi:app", workers=2, env=env) as (_, base):
        login_once(base)
        idle = probe(base, 3)
        stop = threading.Event()
        started = time.perf_counter()
        logins = login_load(base, args.clients, args.seconds, stop)
        rate = logins / (time.perf_counter() - started)
        with ThreadPoolExecutor(max_workers=1) as pool:
            under_load = pool.submit(probe, base, args.seconds - 1)
            login_load(base, args.clients, args.seconds, stop)
            loaded = under_load.result()
    log.info("gunicorn: 2 gevent workers, argon2id m=19MiB t=2 p=1, PASSWORD_HASH_THREADS=1")
    log.info(
        "logins/s with %d concurrent clients: %.1f (%d in %.0f s)",
        args.clients,
        rate,
        logins,
        args.seconds,
    )
    log.info(
        "/health/live idle:              p50 %.1f ms  p99 %.1f ms  (%d samples)",
        p(idle, 50),
        p(idle, 99),
        len(idle),
    )
    log.info(
        "/health/live during %d logins:  p50 %.1f ms  p99 %.1f ms  (%d samples)",
        args.clients,
        p(loaded, 50),
        p(loaded, 99),
        len(loaded),
    )
    return 0 if p(loaded, 99) < 50 else 1


if __name__ == "__main__":
    sys.exit(main())

"""What the request guards cost: authenticated GET throughput with and without them.

Two servers of the production app (`wsgi:app`, our gunicorn config, 2 gevent workers each,
one at a time) on the same database and Redis:

- guards on: rate limiter checking Redis on every request (a budget too large to trip),
  idempotency enabled, authentication, security headers, metrics, access log;
- guards off: `RATELIMIT_ENABLED=false`, `IDEMPOTENCY_ENABLED=false`, all else equal.

`wrk` (Debian package `wrk`) drives `GET /v1/users/me` with a bearer token; rounds
alternate on/off so machine noise hits both; medians and their ratio are printed.

    .venv/bin/python -m bench.guards [--rounds 3] [--seconds 8] [--connections 32]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys

from bench import hot_path
from bench._report import report_logger
from bench._setup import access_token, server_env
from tests.support.servers import gunicorn

log = report_logger("bench.guards")


def wrk(url: str, token: str, seconds: float, connections: int) -> float:
    """Requests per second of one run (`bench.hot_path.wrk`: wrk at nice 19); non-2xx
    answers or socket errors make the run invalid."""
    result = hot_path.wrk(url, token, seconds, connections)
    if result.non_2xx or result.socket_errors:
        raise SystemExit(f"errors during the run: {result}")
    return result.rps


def main() -> int:
    """Alternate guards on/off, print medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        log.info("wrk is missing: apt-get install wrk")
        return 2
    env = server_env("guards", RATELIMIT_DEFAULT="100000000/minute")
    variants = {
        "on": env,
        "off": {**env, "RATELIMIT_ENABLED": "false", "IDEMPOTENCY_ENABLED": "false"},
    }
    results: dict[str, list[float]] = {"on": [], "off": []}
    token = None
    for _ in range(args.rounds):
        for name, variant in variants.items():
            with gunicorn("wsgi:app", workers=2, env=variant) as (_, base):
                token = token or access_token(base)
                url = f"{base}/v1/users/me"
                wrk(url, token, 2, args.connections)  # warm-up: pools, caches
                results[name].append(wrk(url, token, args.seconds, args.connections))
    on, off = statistics.median(results["on"]), statistics.median(results["off"])
    log.info(
        "GET /v1/users/me, 2 gevent workers, wrk -c%d, %d rounds of %.0f s (median):",
        args.connections,
        args.rounds,
        args.seconds,
    )
    log.info("  guards on  (rate limit + idempotency): %.0f req/s  %s", on, results["on"])
    log.info("  guards off:                            %.0f req/s  %s", off, results["off"])
    log.info("  on/off ratio: %.2f (cost of the guards: %.0f%%)", on / off, (1 - on / off) * 100)
    return 0


if __name__ == "__main__":
    sys.exit(main())

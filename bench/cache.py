"""`GET /v1/users/stats` with the cache and without it, production profile, 10,000 users.

Two gunicorn servers side by side (same config, gevent, `--workers` each, same PostgreSQL
and Redis): one with the cache, one with `CACHE_ENABLED=false` (every request counts the
users). Rounds of `wrk` alternate between them; the report gives median req/s, p99 and
the ratio cached/uncached.

Then the stampede: the cached entry is dropped and `--stampede` (1,000) requests arrive at
once on the cached server; the report gives how many of them computed the stats
(`cache_recomputes_total` from `/metrics`, before and after). Goal: 1.

    .venv/bin/python -m bench.cache [--users 10000] [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench._report import report_logger
from bench._setup import EMAIL, access_token, prod_secrets, server_env
from bench.hot_path import wrk
from tests.support.servers import gunicorn

log = report_logger("bench.cache")
ROUTE = "/v1/users/stats"


def add_users(database_url: str, count: int) -> None:
    """`count` users (two in three `user`, the rest `manager`); the bench user may read."""
    import psycopg

    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO users (id, email, name, password_hash, status, token_version,"
            " created_at, updated_at)"
            " SELECT gen_random_uuid(), 'u' || n || '@bench.test', 'User ' || n, 'x',"
            " CASE WHEN n %% 10 = 0 THEN 'suspended' ELSE 'active' END, 0, now(), now()"
            " FROM generate_series(1, %s) AS n",
            (count,),
        )
        conn.execute(
            "INSERT INTO user_roles (user_id, role_id)"
            " SELECT u.id, r.id FROM users u JOIN roles r"
            " ON r.name = CASE WHEN u.email ~ '^u[0-9]*[0-2]@' THEN 'manager' ELSE 'user' END"
            " WHERE u.email LIKE '%%@bench.test'"
        )
        conn.execute(
            "INSERT INTO user_roles (user_id, role_id)"
            " SELECT u.id, r.id FROM users u, roles r WHERE u.email = %s AND r.name = 'manager'",
            (EMAIL,),
        )


def recomputes(base: str) -> float:
    """`cache_recomputes_total{namespace="users"}` summed over the server's workers."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    found = re.findall(r'^cache_recomputes_total\{namespace="users"\} ([\d.e+]+)$', text, re.M)
    return sum(float(value) for value in found)


def stampede(base: str, token: str, requests: int) -> tuple[int, int]:
    """`requests` concurrent GETs released together; (answered 200, other answers)."""
    barrier = threading.Barrier(requests)
    statuses: list[int] = []

    def one() -> None:
        request = urllib.request.Request(  # noqa: S310 - loopback only
            base + ROUTE, headers={"Authorization": f"Bearer {token}"}
        )
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                statuses.append(response.status)
        except OSError:
            statuses.append(0)

    threads = [threading.Thread(target=one) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok = sum(1 for status in statuses if status == 200)
    return ok, len(statuses) - ok


def main() -> int:
    """Both scenarios, then the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stampede", type=int, default=1000)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        log.info("wrk is missing: apt-get install wrk")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    env = server_env(
        "cache",
        APP_ENV="prod",
        **prod_secrets(),
        RATELIMIT_DEFAULT="1000000000/minute",
        JWT_ACCESS_TOKEN_EXPIRES="3600",  # noqa: S106 - a lifetime, not a secret
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "prometheus-cached"),
    )
    add_users(env["DATABASE_URL"], args.users)
    uncached_env = {
        **env,
        "CACHE_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus-uncached"),
    }
    with ExitStack() as stack:
        _, cached = stack.enter_context(
            gunicorn("wsgi:app", workers=args.workers, env=env, log_file=workdir / "cached.log")
        )
        _, uncached = stack.enter_context(
            gunicorn("wsgi:app", workers=args.workers, env=uncached_env, log_file=workdir / "u.log")
        )
        token = access_token(cached)
        targets = {"cached": cached + ROUTE, "uncached": uncached + ROUTE}
        for url in targets.values():
            wrk(url, token, 2, args.connections)  # warm-up
        runs: dict[str, list] = {name: [] for name in targets}
        for n in range(args.rounds):
            order = list(targets) if n % 2 == 0 else list(reversed(targets))
            for name in order:
                runs[name].append(wrk(targets[name], token, args.seconds, args.connections))

        import redis

        client = redis.Redis.from_url(env["REDIS_URL"])
        client.delete(f"{env['APP_NAME']}:prod:cache:users:stats")
        before = recomputes(cached)
        time.sleep(0.5)
        ok, failed = stampede(cached, token, args.stampede)
        computed = recomputes(cached) - before

    log.info(
        "GET %s, %d users, gunicorn gevent x%d each, wrk -c%d, %d alternating rounds of %.0f s",
        ROUTE,
        args.users,
        args.workers,
        args.connections,
        args.rounds,
        args.seconds,
    )
    medians = {}
    for name, results in runs.items():
        medians[name] = statistics.median(r.rps for r in results)
        log.info(
            "  %-9s %7.0f req/s  p99 %6.1f ms  (rounds: %s)",
            name,
            medians[name],
            statistics.median(r.p99_ms for r in results),
            ", ".join(f"{r.rps:.0f}" for r in results),
        )
    log.info("  cached/uncached: %.1fx", medians["cached"] / medians["uncached"])
    log.info(
        "stampede: %d requests at once on a dropped entry: %d answered 200, %d not;"
        " the stats were computed %d time(s) (goal 1)",
        args.stampede,
        ok,
        failed,
        int(computed),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

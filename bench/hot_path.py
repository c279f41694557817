"""The authenticated hot path against a bare-Flask peer: `GET /v1/users/me`.

Starts two servers side by side under the same gunicorn config (`docker/gunicorn.conf.py`,
gevent, `--workers` each) on the same PostgreSQL and Redis:

- project: `wsgi:app` in the production profile (`APP_ENV=prod`, generated secrets, the
  real pool sizes, access log on at INFO written to a file, every guard on; the default
  rate limit is raised so it counts in Redis on every request without ever refusing);
- peer: `bench/peer_app.py`, bare Flask + PyJWT + one psycopg SELECT on a pooled
  connection (the least this route can do).

Scenario 1 alternates `wrk` rounds between the two at `--connections` (32) so machine
noise hits both, and prints median req/s, median p99 latency and the ratio
project/peer. Goal: ratio >= 0.5 and project p99 < 50 ms.
Scenario 2 loads the project at `--flood` (256) connections and reports non-2xx
answers and socket errors (goal: 0 and 0).

    .venv/bin/python -m bench.hot_path [--rounds 5] [--seconds 10] [--profile DIR]

`--profile DIR` records the project's workers with py-spy during one extra round
(collapsed stacks in DIR, loadable by speedscope or flamegraph.pl) and prints the
frames holding the largest share of samples (py-spy from requirements-dev.txt; needs
ptrace rights).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench._profile import py_spy, top_frames
from bench._report import report_logger
from bench._setup import access_token, prod_secrets, server_env
from tests.support.servers import gunicorn

log = report_logger("bench.hot_path")
ROUTE = "/v1/users/me"
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * _UNITS[unit]


def wrk(url: str, token: str, seconds: float, connections: int) -> WrkResult:
    """One wrk run with latency percentiles."""
    result = subprocess.run(
        [
            *("wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency"),
            *("--timeout", "5s", "-H", f"Authorization: Bearer {token}", url),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    out = result.stdout
    if "Requests/sec" not in out or not re.search(r"^\s+99%", out, re.MULTILINE):
        raise SystemExit(f"unexpected wrk output:\n{out}\n{result.stderr}")
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def prod_env(workdir: Path) -> dict[str, str]:
    """The production profile with throwaway secrets (never placeholders: prod refuses them)."""
    return server_env(
        "hot-path",
        APP_ENV="prod",
        LOG_LEVEL="INFO",
        **prod_secrets(),
        JWT_ACCESS_TOKEN_EXPIRES="3600",  # noqa: S106 - a lifetime, not a secret
        RATELIMIT_DEFAULT="1000000000/minute",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "prometheus-project"),
    )


def summary(name: str, runs: list[WrkResult]) -> tuple[float, float]:
    """Log one side's medians; return (median req/s, median p99)."""
    rps = statistics.median(r.rps for r in runs)
    p99 = statistics.median(r.p99_ms for r in runs)
    p50 = statistics.median(r.p50_ms for r in runs)
    each = ", ".join(f"{r.rps:.0f}" for r in runs)
    log.info(
        "  %-8s %7.0f req/s  p50 %6.2f ms  p99 %6.2f ms   (rounds: %s)", name, rps, p50, p99, each
    )
    return rps, p99


def main() -> int:  # noqa: PLR0915 - one linear script
    """Run both scenarios and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--flood", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="record py-spy stacks into this directory")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="project setting"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        log.info("wrk is missing: apt-get install wrk")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-hot-path-"))
    env = {**prod_env(workdir), **dict(item.split("=", 1) for item in args.env)}
    peer_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus-peer")}
    with ExitStack() as stack:
        project, project_base = stack.enter_context(
            gunicorn("wsgi:app", workers=args.workers, env=env, log_file=workdir / "project.log")
        )
        _, peer_base = stack.enter_context(
            gunicorn(
                "bench.peer_app:app",
                workers=args.workers,
                env=peer_env,
                log_file=workdir / "peer.log",
                count_workers=False,
            )
        )
        token = access_token(project_base)
        targets = {"project": project_base + ROUTE, "peer": peer_base + ROUTE}
        for url in targets.values():
            warm = wrk(url, token, 3, args.connections)
            if warm.non_2xx or warm.socket_errors:
                log.info("warm-up failed on %s: %s", url, warm)
                return 1
        runs: dict[str, list[WrkResult]] = {name: [] for name in targets}
        for n in range(args.rounds):
            order = list(targets) if n % 2 == 0 else list(reversed(targets))
            for name in order:
                runs[name].append(wrk(targets[name], token, args.seconds, args.connections))
        flood = wrk(targets["project"], token, args.seconds, args.flood)
        flood_peer = wrk(targets["peer"], token, args.seconds, args.flood)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
            collapsed = args.profile / "hot_path_project.txt"
            recorder = py_spy(project.pid, args.seconds, collapsed)
            wrk(targets["project"], token, args.seconds, args.connections)
            recorder.wait(timeout=60)
    log.info(
        "GET %s, gunicorn gevent x%d each, wrk -t2 -c%d, %d alternating rounds of %.0f s",
        ROUTE,
        args.workers,
        args.connections,
        args.rounds,
        args.seconds,
    )
    project_rps, project_p99 = summary("project", runs["project"])
    peer_rps, _ = summary("peer", runs["peer"])
    ratio = project_rps / peer_rps
    errors = sum(r.non_2xx + r.socket_errors for rs in runs.values() for r in rs)
    log.info(
        "  ratio project/peer: %.2f (goal >= 0.50); project p99 %.1f ms (goal < 50)",
        ratio,
        project_p99,
    )
    log.info("  non-2xx + socket errors over all rounds: %d", errors)
    log.info("Flood: wrk -c%d for %.0f s", args.flood, args.seconds)
    for name, result in (("project", flood), ("peer", flood_peer)):
        log.info(
            "  %-8s %7.0f req/s  p99 %7.1f ms  non-2xx %d  socket errors %d",
            name,
            result.rps,
            result.p99_ms,
            result.non_2xx,
            result.socket_errors,
        )
    met = ratio >= 0.5 and project_p99 < 50 and not errors
    met = met and flood.non_2xx == 0 and flood.socket_errors == 0
    log.info("goals met: %s", "yes" if met else "NO")
    if args.profile:
        log.info("py-spy, share of samples per frame (inclusive): %s", collapsed)
        for share, frame in top_frames(collapsed):
            log.info("  %5.1f%%  %s", share * 100, frame)
    log.info("server logs: %s", workdir)
    return 0 if met else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

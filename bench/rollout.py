"""Rollout rehearsal: rolling restarts of the web, realtime and worker roles under load.

Every "pod" is one gunicorn (`wsgi:app`, `docker/gunicorn.conf.py`, `APP_ENV=prod`; 2
gevent workers for web, 1 for realtime) on a port of its own, or one Celery worker (gevent
pool, queues default,chat,low). The load generator (`bench/_rollout_load.py`, one gevent
process) is also the load balancer: it routes to a backend only while its `/health/ready`
answers 200 (probed every second), sends `--rate` req/s of `GET /v1/users/me` and `PATCH
/v1/users/me` (one in 5; same name every time: idempotent), retrying a connection-level
failure ONCE on another backend (never an HTTP status), and holds `--members` chat sockets
in one room, member 0 sending a message every `--chat-interval` s (same `clientMsgId`
resent until ACCEPTED); members reconnect on `server:shutdown` and resync through
`GET /v1/rooms/{id}/messages?after=`.

A reload cycle, as the chart rolls a Deployment: start a new pod, wait until it is ready
and the balancer routes to it, wait `--prestop` s (the preStop sleep), SIGTERM the old
pod (its workers answer 503 on readiness for SHUTDOWN_DRAIN_SECONDS, then stop accepting
and finish in flight within GUNICORN_GRACEFUL_TIMEOUT), wait for it to exit. The worker
cycle: start a new Celery worker, SIGTERM the old one while chat persist tasks flow.

Reported per cycle: HTTP requests sent / ok / failed, longest gap between completions and
longest request; chat messages accepted; exit time of the old pod. At the end: chat
messages accepted but not stored (database) or not seen by some member (lost), and
persist tasks (one per accepted message) never completed. Goals: 0 failed, 0 lost, 0 lost.

    .venv/bin/python -m bench.rollout [--cycles 3] [--rate 200] [--members 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._report import report_logger
from bench._setup import access_token, prod_secrets, server_env
from bench.chat import create_logins, create_room, enable_chat, local_app, server_warnings
from tests.support.servers import get, gunicorn, stop_process, wait_until

log = report_logger("bench.rollout")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DRAIN_S = 3.0
GRACEFUL_S = 10


class Pod:
    """One gunicorn process set on its own port."""

    def __init__(self, role: str, n: int, env: dict[str, str], workdir: Path) -> None:
        self.name = f"{role}-{n}"
        self.log_path = workdir / f"{self.name}.log"
        self._cm = gunicorn(
            "wsgi:app",
            workers=2 if role == "web" else 1,
            env={**env, "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prom-{self.name}")},
            drain=DRAIN_S,
            log_file=self.log_path,
        )
        self.process, self.base = self._cm.__enter__()
        wait_until(lambda: get(f"{self.base}/health/ready")[0] == 200, 30, f"{self.name} ready")

    def terminate(self) -> float:
        """SIGTERM and wait for it to exit; seconds it took (killed after the grace)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=DRAIN_S + GRACEFUL_S + 5)
        finally:
            self._cm.__exit__(None, None, None)
        return time.monotonic() - started


class Worker:
    """One Celery worker (the `worker` role)."""

    def __init__(self, n: int, env: dict[str, str], workdir: Path) -> None:
        self.name = f"worker-{n}"
        self.log_path = workdir / f"{self.name}.log"
        self._out = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(BIN / "celery"),
                *("-A", "celery_worker.celery", "worker", "--pool", "gevent"),
                *("--queues", "default,chat,low", "--hostname", f"rollout-{n}@%h"),
                *("--without-heartbeat", "--without-mingle", "--without-gossip"),
                *("--loglevel", "INFO"),
            ],
            cwd=ROOT,
            env={
                **os.environ,
                **env,
                "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prom-{self.name}"),
                "PYTHONPATH": str(ROOT),
            },
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: " ready." in self.log_path.read_text(errors="replace"),
            60,
            f"{self.name} ready",
            interval=0.1,
        )

    def terminate(self) -> float:
        """SIGTERM (warm shutdown) and wait; seconds it took."""
        started = time.monotonic()
        stop_process(self.process, timeout=30)
        self._out.close()
        return time.monotonic() - started


class Generator:
    """The load generator process: commands in, JSON lines out."""

    def __init__(self, plan: dict[str, Any], workdir: Path) -> None:
        path = workdir / "load.plan.json"
        path.write_text(json.dumps(plan))
        self._err = (workdir / "load.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench._rollout_load", str(path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        self.routing: list[dict[str, Any]] = []

    def order(self, command: str) -> None:
        """One command line."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def expect(self, event: str) -> dict[str, Any]:
        """The next line of this event (routing lines are kept on the way)."""
        while True:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError("the load generator died (see load.log)")
            data = json.loads(line)
            if data["event"] == "routing":
                self.routing.append(data)
            elif data["event"] == event:
                return data

    def routed(self, url: str, ready: bool, timeout: float = 10) -> None:
        """Wait until the balancer has seen `url` become (not) ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.order("ping")  # its answer comes after the routing lines so far
            self.expect("pong")
            if any(r["url"] == url and r["ready"] == ready for r in self.routing):
                return
            time.sleep(0.5)
        raise TimeoutError(f"the balancer did not see {url} ready={ready}")


def snapshot_row(gen: Generator, label: str, exit_s: float | None, rows: list) -> None:
    """Counters since the last snapshot, as one row of the report."""
    gen.order("snapshot")
    snap = gen.expect("snapshot")
    rows.append((label, snap, exit_s))


def run(args: argparse.Namespace) -> int:  # noqa: PLR0915 - one linear script
    """Set up, run every cycle, report."""
    begun = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    env = server_env(
        "rollout",
        APP_ENV="prod",
        LOG_LEVEL="INFO",
        **prod_secrets(),
        JWT_ACCESS_TOKEN_EXPIRES="3600",  # noqa: S106 - a lifetime
        GUNICORN_GRACEFUL_TIMEOUT=str(GRACEFUL_S),
        REALTIME_SHUTDOWN_GRACE_SECONDS="1",
        RATELIMIT_DEFAULT="1000000/minute",  # one user sends all the load
        CHAT_SEND_LIMIT="1000 per 10 seconds",
        CELERY_TASK_SOFT_TIME_LIMIT="5",
        CELERY_TASK_TIME_LIMIT="8",
        CELERY_RETRY_BACKOFF_MAX="5",
        CELERY_VISIBILITY_TIMEOUT="10",
    )
    app = local_app(env)
    logins = create_logins(app, args.members, 1)
    enable_chat(app)
    room_id = create_room(app, [login.user_id for login in logins])
    log.info("setup done; logs in %s", workdir)
    pods = {"web": Pod("web", 0, env, workdir), "rt": Pod("realtime", 0, env, workdir)}
    worker = Worker(0, env, workdir)
    plan = {
        "rate": args.rate,
        "write_every": 5,
        "probe_s": 1.0,
        "web_token": access_token(pods["web"].base),
        "chat_tokens": [login.token for login in logins],
        "room_id": room_id,
        "chat_interval": args.chat_interval,
        "settle_s": 5,
    }
    gen = Generator(plan, workdir)
    rows: list = []
    counter = 1
    try:
        for role in ("web", "rt"):
            gen.order(f"add {role} {pods[role].base}")
            gen.routed(pods[role].base, True)
        gen.order("start")
        time.sleep(5)
        snapshot_row(gen, "steady (no reload)", None, rows)
        for role, kind in (("web", "web"), ("rt", "realtime")):
            for cycle in range(1, args.cycles + 1):
                new = Pod(kind, counter, env, workdir)
                counter += 1
                gen.order(f"add {role} {new.base}")
                gen.routed(new.base, True)
                time.sleep(args.prestop)  # the old pod's preStop sleep
                old, pods[role] = pods[role], new
                exit_s = old.terminate()
                time.sleep(1)
                snapshot_row(gen, f"{kind} reload {cycle}", exit_s, rows)
        for cycle in range(1, args.cycles + 1):
            new_worker = Worker(counter, env, workdir)
            counter += 1
            time.sleep(1)
            exit_s = worker.terminate()
            worker = new_worker
            time.sleep(2)
            snapshot_row(gen, f"worker SIGTERM {cycle}", exit_s, rows)
        gen.order("stop")
        final = gen.expect("final")
        rows.append(("final drain", final, None))
    finally:
        if gen.process.poll() is None:
            gen.process.kill()
        for pod in pods.values():
            pod.terminate()
        worker.terminate()
    ok = report(rows, final, env, room_id)
    logged: Counter = Counter()
    for path in workdir.glob("*-*.log"):
        logged += server_warnings(path)
    for event, count in sorted(logged.items(), key=lambda item: -item[1])[:10]:
        log.info("logged by the servers %5d x %s", count, event)
    log.info("goals met: %s (%.0f s in all); logs: %s", ok, time.monotonic() - begun, workdir)
    return 0 if ok else 1


def stored_ids(env: dict[str, str], room_id: str) -> set[str]:
    """clientMsgIds of the messages stored in the room."""
    import psycopg
    from sqlalchemy import make_url

    url = make_url(env["DATABASE_URL"]).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        rows = conn.execute(
            "SELECT client_msg_id FROM messages WHERE room_id = %s", (room_id,)
        ).fetchall()
    return {row[0] for row in rows}


def report(rows: list, final: dict[str, Any], env: dict[str, str], room_id: str) -> bool:
    """Print the table and the verdict; True when every goal is met."""
    log.info(
        "%-20s %7s %7s %6s %7s %8s %9s %6s %7s",
        "phase",
        "sent",
        "ok",
        "failed",
        "retried",
        "gap ms",
        "longest",
        "chat",
        "exit s",
    )
    failed = 0
    for label, snap, exit_s in rows:
        http = snap["http"]
        failed += http["failed"]
        log.info(
            "%-20s %7d %7d %6d %7d %8.0f %9.0f %6s %7s",
            label,
            http["sent"],
            http["ok"],
            http["failed"],
            http["retried"],
            http["gap_s"] * 1000,
            http["longest_s"] * 1000,
            snap.get("chat_accepted", "-"),
            f"{exit_s:.1f}" if exit_s is not None else "-",
        )
        for reason, count in http["failures"].items():
            log.info("    %5d x %s", count, reason)
    accepted = set(final["accepted"])
    stored = stored_ids(env, room_id)
    not_stored = accepted - stored
    unseen = [len(accepted - set(seen)) for seen in final["seen"]]
    lost_chat = len(not_stored | {m for seen in final["seen"] for m in accepted - set(seen)})
    log.info(
        "chat: %d accepted (%d resends), %d stored in the room, accepted but not stored %d;"
        " members missing some: %d (most missed by one member %d); reconnects per member %s",
        len(accepted),
        final["resent"],
        len(stored),
        len(not_stored),
        sum(1 for n in unseen if n),
        max(unseen, default=0),
        sorted(set(final["connects"])),
    )
    log.info(
        "tasks (chat persist, one per accepted message): %d enqueued, %d completed, %d lost",
        len(accepted),
        len(accepted & stored),
        len(not_stored),
    )
    log.info(
        "VERDICT: failed HTTP requests %d (goal 0), chat messages lost %d (goal 0), tasks lost"
        " %d (goal 0); longest gap between completions %.0f ms, longest request %.0f ms",
        failed,
        lost_chat,
        len(not_stored),
        max(snap["http"]["gap_s"] for label, snap, _ in rows if label != "final drain") * 1000,
        max(snap["http"]["longest_s"] for _, snap, _ in rows) * 1000,
    )
    return failed == 0 and lost_chat == 0 and not not_stored


def main() -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--chat-interval", type=float, default=0.2)
    parser.add_argument("--prestop", type=float, default=2)
    return run(parser.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

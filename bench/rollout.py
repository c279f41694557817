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
and finish in flight within GUNICORN_GRACEFUL_TIMEOUT), wait for it to exit.

A worker cycle lands a SIGTERM in the middle of long tasks: `--exports` users CSV exports
(`POST /v1/users/export`, one `jobs.run` task each, reading `--export-users` seeded users:
`bench/_rollout_jobs.py`) are started on the old worker; once one is `running` a new
worker starts (the surge pod), then the old one gets SIGTERM (warm shutdown: running tasks
finish) and SIGKILL if still there after its window (`--worker-windows`, one per cycle,
cycled: by default 120 s, which the exports finish within, then 3 s, which they outlast:
acks_late leaves their messages to be delivered again, on the Redis broker after
`--visibility` s, and they run again on the new worker). The job states at SIGTERM are
printed; at the end every export is followed through `GET /v1/jobs/{id}` until it is
final or `--job-deadline` passed. Workers run at nice 10 (see `Worker`).

`--compare-signals` then reloads ONE web pod in place under the same load, `--cycles`
times each: gunicorn HUP, USR2 + WINCH + QUIT, USR2 + WINCH + TERM (plus one cycle of
each with the balancer ignoring readiness), and the chart's way, with the code on disk
changed before every reload (a temporary copy of the project), and reports failed
requests, stalls and whether the new code is served (`bench/_rollout_signals.py`).

Reported per cycle: HTTP requests sent / ok / failed, longest gap between completions and
longest request; chat messages accepted; exit time of the old pod or worker; per worker
cycle: exports started, running at SIGTERM, succeeded in the end, lost, attempts. At the
end: chat messages accepted but not stored (database) or not seen by some member (lost),
persist tasks (one per accepted message) never completed, export jobs lost. Goals: 0
failed, 0 lost, 0 lost, 0 lost (the in-place reloads are measured, not judged).

    .venv/bin/python -m bench.rollout [--cycles 3] [--rate 200] [--members 20]
        [--compare-signals] [--broker redis|amqp] [--worker-windows 120,3]
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

from bench._report import report_logger, start_load
from bench._rollout_jobs import Exports, job_rows, prepare_exports
from bench._rollout_signals import MODES, Comparison
from bench._rollout_signals import report as report_signals
from bench._setup import access_token, prod_secrets, server_env
from bench.chat import (
    create_logins,
    create_room,
    enable_chat,
    local_app,
    server_warnings,
    vacuum_analyze,
)
from tests.support.servers import get, gunicorn, stop_process, wait_until

log = report_logger("bench.rollout")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DRAIN_S = 3.0
GRACEFUL_S = 10
VHOST = "myapp-bench-rollout"  # `--broker amqp`
WORKER_NICE = 10


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


class CeleryProcess:
    """One `celery -A celery_worker.celery ...` process (a worker or beat pod), its output
    in `<name>.log`; up once that log shows `ready`."""

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], workdir: Path, ready: str
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{self.name}.log"
        self._out = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command,
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
            lambda: ready in self.log_path.read_text(errors="replace"),
            60,
            f"{self.name} ready",
            interval=0.1,
        )

    def terminate(self, window: float = 30) -> tuple[float, bool]:
        """SIGTERM (warm shutdown: running tasks finish), SIGKILL if still there after
        `window` s (the pod's terminationGracePeriodSeconds); seconds it took, and whether it
        had to be killed."""
        started = time.monotonic()
        stop_process(self.process, timeout=window)
        self._out.close()
        return time.monotonic() - started, self.process.returncode == -signal.SIGKILL


class Worker(CeleryProcess):
    """One Celery worker (the `worker` role), at nice `WORKER_NICE`: in a cluster a worker
    pod has CPU of its own; on this one machine a CPU-bound export would otherwise take the
    CPU the web pods need and the stall measured would be the co-location's."""

    def __init__(self, n: int, env: dict[str, str], workdir: Path) -> None:
        command = [
            *("nice", "-n", str(WORKER_NICE), str(BIN / "celery")),
            *("-A", "celery_worker.celery", "worker", "--pool", "gevent"),
            *("--queues", "default,chat,low", "--hostname", f"rollout-{n}@%h"),
            *("--without-heartbeat", "--without-mingle", "--without-gossip"),
            *("--loglevel", "INFO"),
        ]
        super().__init__(f"worker-{n}", command, env, workdir, ready=" ready.")


class Beat(CeleryProcess):
    """The one beat pod: the periodic jobs, the reclaim of jobs whose worker died among them."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        command = [str(BIN / "celery"), "-A", "celery_worker.celery", "beat", "--loglevel", "INFO"]
        super().__init__("beat", command, env, workdir, ready="beat: Starting")


class Generator:
    """The load generator process: commands in, JSON lines out."""

    def __init__(self, plan: dict[str, Any], workdir: Path) -> None:
        self.process, self._err = start_load(
            "bench._rollout_load", plan, workdir / "load.plan.json", workdir / "load.log"
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


def rollout_env(args: argparse.Namespace, workdir: Path) -> dict[str, str]:
    """The servers' environment (its own database, prod profile, short limits)."""
    broker = {"CELERY_BROKER_URL": rabbitmq_vhost()} if args.broker == "amqp" else {}
    return server_env(
        "rollout",
        APP_ENV="prod",
        LOG_LEVEL="INFO",
        **prod_secrets(),
        JWT_ACCESS_TOKEN_EXPIRES="3600",  # noqa: S106 - a lifetime
        GUNICORN_GRACEFUL_TIMEOUT=str(GRACEFUL_S),
        REALTIME_SHUTDOWN_GRACE_SECONDS="1",
        RATELIMIT_DEFAULT="1000000/minute",  # one user sends all the load
        CHAT_SEND_LIMIT="1000 per 10 seconds",
        # An export runs for seconds to tens of seconds here: limits above that.
        CELERY_TASK_SOFT_TIME_LIMIT="60",
        CELERY_TASK_TIME_LIMIT="70",
        CELERY_RETRY_BACKOFF_MAX="5",
        CELERY_VISIBILITY_TIMEOUT=str(args.visibility),
        FILES_LOCAL_DIR=str(workdir / "files"),  # the exports' CSV files
        **broker,
    )


def rabbitmq_vhost() -> str:
    """A fresh vhost of the machine's RabbitMQ (`rabbitmqctl`), as a broker URL."""
    drop_rabbitmq_vhost()
    for args in (("add_vhost", VHOST), ("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")):
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)
    return f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"


def drop_rabbitmq_vhost() -> None:
    """Delete the benchmark's vhost (if any)."""
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST], capture_output=True, timeout=60)


class Rehearsal:
    """The pods, the worker and the load of one run; each kind of cycle is a method."""

    def __init__(
        self, args: argparse.Namespace, env: dict[str, str], workdir: Path, logins: list, room: str
    ) -> None:
        self.args, self.env, self.workdir = args, env, workdir
        self.pods = {"web": Pod("web", 0, env, workdir), "rt": Pod("realtime", 0, env, workdir)}
        self.worker = Worker(0, env, workdir)
        self.beat = Beat(env, workdir)
        self.counter = 1
        web = self.pods["web"].base
        self.exports = Exports(web, access_token(web))
        plan = {
            "rate": args.rate,
            "write_every": 5,
            "probe_s": 1.0,
            "web_token": access_token(web),
            "chat_tokens": [login.token for login in logins],
            "room_id": room,
            "chat_interval": args.chat_interval,
            "settle_s": 5,
        }
        self.gen = Generator(plan, workdir)
        self.rows: list = []
        self.job_cycles: list[dict[str, Any]] = []
        self.comparison: Comparison | None = None

    def start(self) -> None:
        """The balancer routes to the first pods; load starts; a steady row."""
        for role in ("web", "rt"):
            self.gen.order(f"add {role} {self.pods[role].base}")
            self.gen.routed(self.pods[role].base, True)
        self.gen.order("start")
        time.sleep(5)
        self.row("steady (no reload)", None)

    def pod_cycles(self) -> None:
        """Web then realtime, the chart's way: new pod, ready, preStop, SIGTERM the old."""
        for role, kind in (("web", "web"), ("rt", "realtime")):
            for cycle in range(1, self.args.cycles + 1):
                new = Pod(kind, self.counter, self.env, self.workdir)
                self.counter += 1
                self.gen.order(f"add {role} {new.base}")
                self.gen.routed(new.base, True)
                time.sleep(self.args.prestop)  # the old pod's preStop sleep
                old, self.pods[role] = self.pods[role], new
                exit_s = old.terminate()
                time.sleep(1)
                self.row(f"{kind} reload {cycle}", exit_s)

    def worker_cycles(self) -> None:
        """Exports on the old worker; once one runs, a new worker (the surge pod); SIGTERM
        to the old one while it runs them, SIGKILL after its window."""
        windows = [float(w) for w in self.args.worker_windows.split(",")]
        self.exports.base = self.pods["web"].base
        for cycle in range(1, self.args.cycles + 1):
            window = windows[(cycle - 1) % len(windows)]
            started = [self.exports.start() for _ in range(self.args.exports)]
            wait_until(
                lambda: "running" in self.exports.statuses(started).values(),  # noqa: B023
                60,
                "an export running",
                0.2,
            )
            new = Worker(self.counter, self.env, self.workdir)
            self.counter += 1
            time.sleep(1)
            at_sigterm = self.exports.statuses(started)
            log.info(
                "worker SIGTERM %d (window %.0f s): exports at SIGTERM: %s",
                cycle,
                window,
                ", ".join(f"{job} {state}" for job, state in at_sigterm.items()),
            )
            exit_s, killed = self.worker.terminate(window)
            self.worker = new
            self.job_cycles.append(
                {
                    "cycle": cycle,
                    "window": window,
                    "jobs": started,
                    "running": sum(1 for state in at_sigterm.values() if state == "running"),
                    "exit_s": exit_s,
                    "killed": killed,
                }
            )
            time.sleep(2)
            self.row(f"worker SIGTERM {cycle}", exit_s)

    def compare_signals(self) -> None:
        """One web pod from a copy of the code replaces the web pod; it is reloaded in
        place (HUP, USR2) and the chart's way, `--cycles` times each."""
        self.comparison = Comparison(self.gen, self.env, self.workdir, DRAIN_S, self.snapshot)
        self.comparison.take_over(lambda: self.pods.pop("web").terminate(), self.args.prestop)
        for mode in self.args.signal_modes.split(","):
            static = [] if mode == "chart" else [True]  # the chart's way needs readiness
            for cycle, alone in enumerate([False] * self.args.cycles + static, 1):
                row = self.comparison.cycle(mode, cycle, self.args.prestop, static=alone)
                log.info(
                    "%s%s %d: %.1f s, %d failed, generation %d on disk, served route %s"
                    " settings %s %s",
                    mode,
                    " (balancer ignoring readiness)" if alone else "",
                    cycle,
                    row["reload_s"],
                    row["snap"]["http"]["failed"],
                    row["generation"],
                    dict(row["served"]["route"]),
                    dict(row["served"]["settings"]),
                    row["note"],
                )

    def snapshot(self) -> dict[str, Any]:
        """The balancer's counters since the last snapshot (which it then resets)."""
        self.gen.order("snapshot")
        return self.gen.expect("snapshot")

    def row(self, label: str, exit_s: float | None) -> None:
        """Counters since the last snapshot, as one row of the report."""
        self.rows.append((label, self.snapshot(), exit_s))

    def finish(self) -> tuple[dict[str, Any], list[str], dict[str, str]]:
        """Stop the load (its final counters); wait for every export to end (or the
        deadline): the jobs and their states."""
        self.gen.order("stop")
        final = self.gen.expect("final")
        self.rows.append(("final drain", final, None))
        job_ids = [job for cycle in self.job_cycles for job in cycle["jobs"]]
        web = self.comparison.pod if self.comparison else self.pods["web"]
        self.exports.base = web.base
        return final, job_ids, self.exports.wait_final(job_ids, self.args.job_deadline)

    def close(self) -> None:
        """Stop everything this run started."""
        if self.gen.process.poll() is None:
            self.gen.process.kill()
        for pod in self.pods.values():
            pod.terminate()
        if self.comparison is not None:
            self.comparison.close()
        self.worker.terminate()
        self.beat.terminate()


def run(args: argparse.Namespace) -> int:
    """Set up, run every cycle, report."""
    begun = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    env = rollout_env(args, workdir)
    try:
        app = local_app(env)
        logins = create_logins(app, args.members, 1)
        enable_chat(app)
        room_id = create_room(app, [login.user_id for login in logins])
        prepare_exports(app, args.export_users)
        vacuum_analyze(env["DATABASE_URL"])
        log.info("setup done (%d users to export); logs in %s", args.export_users, workdir)
        rehearsal = Rehearsal(args, env, workdir, logins, room_id)
        try:
            rehearsal.start()
            rehearsal.pod_cycles()
            rehearsal.worker_cycles()
            if args.compare_signals:
                rehearsal.compare_signals()
            final, job_ids, states = rehearsal.finish()
        finally:
            rehearsal.close()
    finally:
        if args.broker == "amqp":
            drop_rabbitmq_vhost()
    figures = report(rehearsal.rows, final, env, room_id)
    lost_jobs, landed = report_jobs(
        rehearsal.job_cycles, states, job_rows(env["DATABASE_URL"], job_ids)
    )
    if rehearsal.comparison is not None:
        report_signals(rehearsal.comparison.rows, log)
    ok = verdict(figures, lost_jobs, landed)
    logged: Counter = Counter()
    for path in workdir.glob("*-*.log"):
        logged += server_warnings(path)
    for event, count in sorted(logged.items(), key=lambda item: -item[1])[:10]:
        log.info("logged by the servers %5d x %s", count, event)
    log.info("goals met: %s (%.0f s in all); logs: %s", ok, time.monotonic() - begun, workdir)
    return 0 if ok else 1


def report_jobs(
    cycles: list[dict[str, Any]], states: dict[str, str], rows: dict[str, dict[str, Any]]
) -> tuple[int, bool]:
    """The export jobs of each worker cycle; how many were lost, and whether every SIGTERM
    landed in a running export."""
    log.info("")
    log.info(
        "export jobs (one `jobs.run` task each) per worker SIGTERM; window = SIGTERM to"
        " SIGKILL; lost = not succeeded by the deadline"
    )
    log.info(
        "%-16s %8s %7s %9s %6s %7s %9s %5s  %s",
        "phase",
        "window s",
        "started",
        "running@",
        "exit s",
        "killed",
        "succeeded",
        "lost",
        "attempts / run s of the last attempt",
    )
    lost = landed = 0
    for cycle in cycles:
        jobs = cycle["jobs"]
        succeeded = sum(1 for job in jobs if states[job] == "succeeded")
        lost += len(jobs) - succeeded
        landed += 1 if cycle["running"] else 0
        log.info(
            "%-16s %8.0f %7d %9d %6.1f %7s %9d %5d  %s",
            f"worker SIGTERM {cycle['cycle']}",
            cycle["window"],
            len(jobs),
            cycle["running"],
            cycle["exit_s"],
            "yes" if cycle["killed"] else "no",
            succeeded,
            len(jobs) - succeeded,
            ", ".join(
                f"{rows[job]['status']} x{rows[job]['attempts']}"
                + (f" {rows[job]['run_s']:.1f}s" if rows[job]["run_s"] is not None else "")
                for job in jobs
            ),
        )
    log.info(
        "exports: %d started, %d lost; SIGTERM landed in a running export in %d of %d cycles",
        sum(len(cycle["jobs"]) for cycle in cycles),
        lost,
        landed,
        len(cycles),
    )
    return lost, landed == len(cycles)


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


def report(rows: list, final: dict[str, Any], env: dict[str, str], room_id: str) -> dict:
    """Print the table and what happened to the chat messages; the figures of the verdict."""
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
    return {
        "failed": failed,
        "lost_chat": lost_chat,
        "lost_tasks": len(not_stored),
        "gap_ms": max(snap["http"]["gap_s"] for label, snap, _ in rows if label != "final drain")
        * 1000,
        "longest_ms": max(snap["http"]["longest_s"] for _, snap, _ in rows) * 1000,
    }


def verdict(figures: dict[str, Any], lost_jobs: int, landed: bool) -> bool:
    """The last line; True when every goal is met."""
    log.info("")
    log.info(
        "VERDICT (chart rollout): failed HTTP requests %d (goal 0), chat messages lost %d"
        " (goal 0), tasks lost %d chat persist + %d export jobs (goal 0); longest gap between"
        " completions %.0f ms, longest request %.0f ms; every worker SIGTERM landed in a"
        " running export: %s",
        figures["failed"],
        figures["lost_chat"],
        figures["lost_tasks"],
        lost_jobs,
        figures["gap_ms"],
        figures["longest_ms"],
        "yes" if landed else "NO",
    )
    return (
        figures["failed"] == 0
        and figures["lost_chat"] == 0
        and figures["lost_tasks"] == 0
        and lost_jobs == 0
        and landed
    )


def main() -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--chat-interval", type=float, default=0.2)
    parser.add_argument("--prestop", type=float, default=2)
    parser.add_argument("--export-users", type=int, default=100_000, help="users an export reads")
    parser.add_argument("--exports", type=int, default=2, help="exports per worker cycle")
    parser.add_argument(
        "--worker-windows",
        default="120,3",
        help="seconds from a worker's SIGTERM to its SIGKILL, one per worker cycle (cycled):"
        " longer than the exports (they finish), then shorter (they are killed)",
    )
    parser.add_argument("--job-deadline", type=float, default=240, help="s for jobs to end")
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument(
        "--visibility",
        type=int,
        default=90,
        help="CELERY_VISIBILITY_TIMEOUT (Redis broker): when a killed task comes back",
    )
    parser.add_argument(
        "--compare-signals",
        action="store_true",
        help="then reload one web pod in place (HUP, USR2) and the chart's way, and compare",
    )
    parser.add_argument("--signal-modes", default=",".join(MODES), help=",".join(MODES))
    return run(parser.parse_args())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

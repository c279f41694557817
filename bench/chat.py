"""Realtime chat: idle sockets held by one realtime process, and broadcast latency to a room.

The realtime role runs as in production: `wsgi:app` under our gunicorn config
(`docker/gunicorn.conf.py`) with ONE gevent worker, `APP_ENV=prod` (generated secrets,
production pool sizes and timeouts, INFO logs written to a file), plus one Celery worker as
the `worker` role runs it (gevent pool, concurrency 50, queues default,chat,low), which
stores each message and broadcasts it through the Socket.IO Redis queue. Both use a
throwaway database `myapp_bench_chat` and the shared Redis (their own key prefix). Raised
for the benchmark only: `GUNICORN_WORKER_CONNECTIONS` (default 1,000 connections per worker:
`--worker-connections`, 12,000), the soft file-descriptor limit (up to the hard one, in this
process before the servers start, so they inherit it, and in each load generator),
`CHAT_SEND_LIMIT` (20 per 10 s per user; the sender sends ~7 a second: 1000 per 10 s) and
the access-token lifetime (an hour, so no token runs out during a run).

Users are not registered through the API (10,000 password hashes): this process inserts
them with SQL (role `user`, one argon2 hash shared by all), one open login session
(`auth_sessions` row) per socket, and mints each socket's access token with
`myapp.auth.tokens.issue_pair`, as a login would (no refresh-token rows: nothing refreshes).
Default: `--clients` distinct users with one socket each (`--sockets-per-user` to share).
The `chat` flag (off in production) is switched on for everybody, as an operator would,
and the database is `VACUUM ANALYZE`d after the bulk inserts (statistics as a live database
has them; no autovacuum waking up mid-measurement). Both scenarios run against the same
realtime and Celery processes, one after the other (the broadcast once the idle sockets are
gone); its room's members are the first users.

The clients are a separate program, `bench/_chat_load.py`, run as `--load-procs` processes
(2: one per core) that each hold their share of clients as greenlets speaking the Engine.IO
v4 / Socket.IO v5 text protocol over `websocket-client` (see that file). They write JSON
lines to this process and take commands on stdin.

1. Idle sockets. `--clients` (10,000) clients connect to `/chat` with
   `--connect-concurrency` (200) attempts in flight across the generators; a refused
   attempt is tried again as a Socket.IO client reconnects (after 1 s, doubling up to 5 s,
   +-50%; 10 attempts in all), so the first attempts measure a reconnection storm and the
   retries get (nearly) every client in. All are held at once for
   `--hold` s (40: longer than the 25 s ping interval, so every client answers at least
   one ping), then closed. Reported: connected / attempted, failed attempts by reason,
   connect time (first attempt started to last client accepted; per client, TCP connect
   to namespace accepted), the worker's socket gauge (`socketio_connected_clients` from
   `/metrics`), `GET /health/live` with all sockets open, the worker's CPU while holding,
   and its RSS (`VmRSS` of the gunicorn *worker* process, not the master) before the first
   connect, with all connected, at the end of the hold and after all closed. RSS per
   client = (all connected - before) / connected. Goal: >= 10,000 held by one process.
2. Broadcast. A public room of `--members` (1,000) distinct users (rows inserted here); all
   connect and `chat:join`. One member sends `--warmup` (3) uncounted messages, then
   `--messages` (100), `--interval` (0.15) s apart; each body carries `time.time()` taken
   just before its frame is written. Every member (the sender too) notes `time.time()` when
   each `chat:message` arrives: latency = receive - send, over all deliveries (messages x
   members), on one host (one clock). It covers the whole path: the realtime process
   accepts and queues (`chat:send` ACK), the Celery worker stores the message and emits it
   through Redis, the realtime process fans it out to 1,000 sockets, the generators read
   it. Reported: messages sent and their ACKs, deliveries expected / received (duplicates,
   members missing some), p50/p90/p99/max latency in ms over all deliveries, per message
   the latency of its first and of its last delivery (the path, and the path plus the
   fan-out), the ACK time, CPU of the realtime worker, the Celery worker and the
   generators. Goal: p99 < 250 ms.

Reading the numbers: everything shares 2 cores (server, Celery, PostgreSQL, Redis and the
generators), so latency includes the generators' own queueing: a broadcast lands on ~500
sockets per generator at once, and the last one read is stamped after the others were
parsed (their CPU is printed). "First member reached" is the path (ACK, queue, store,
Redis, fan-out start); "last member reached" adds the fan-out to every socket. The tail
(p99, max) is a few stalled messages, so it moves from run to run on a noisy machine more
than p50 does: run it more than once before reading a verdict. RSS per client includes what
the server allocated once on first use during the connects (a few MiB, spread over all
clients); "after all closed" is memory the process kept, not sockets. Server warnings and
errors logged during the run are counted; on failure the logs' last lines above info are
printed. Logs, the generators' plans and every delivery's latency (`deliveries.json`) stay
in the printed directory.

    .venv/bin/python -m bench.chat [--clients 10000] [--members 1000] [--messages 100]
                                   [--load-procs 2] [--hold 40] [--skip idle|broadcast]
                                   [--profile DIR]

`--profile DIR` records the realtime worker with py-spy (requirements-dev.txt; needs ptrace
rights) for 30 s of the connects, 30 s of the hold and during the broadcast, and prints
the project's frames holding the largest share of samples and where the samples end
(collapsed stacks stay in DIR, for speedscope).

Needs PostgreSQL and Redis at DATABASE_URL / REDIS_URL.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench._profile import py_spy, top_frames
from bench._report import report_logger, rss_kib, start_load, worker_pid
from bench._setup import prod_secrets, server_env
from tests.support.servers import gunicorn, stop_process, wait_until

log = report_logger("bench.chat")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IDLE_GOAL = 10_000
LATENCY_GOAL_MS = 250.0
PASSWORD = "chat-bench-password"  # noqa: S105 - throwaway accounts in a throwaway database
CONNECT_ATTEMPTS = 10
CONNECT_TIMEOUT_S = 30


# --- measuring processes ---------------------------------------------------------------


def raise_nofile(needed: int) -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); (soft, hard)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        log.info("warning: the hard file-descriptor limit %d is below the %d needed", hard, needed)
    return hard, hard


def cpu_s(pid: int) -> float:
    """CPU time (user + system) `pid` has used, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (`share` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def server_sockets(base: str) -> int | None:
    """Sockets the server counts as connected (`socketio_connected_clients`, /metrics)."""
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as answer:  # noqa: S310
            text = answer.read().decode()
    except OSError:
        return None
    found = re.findall(r"^\w*socketio_connected_clients(?:\{[^}]*\})? (\S+)$", text, re.MULTILINE)
    return round(sum(float(value) for value in found)) if found else None


def probe(base: str) -> str:
    """`GET /health/live`: its status and time, or why it failed."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{base}/health/live", timeout=5) as answer:  # noqa: S310
            status = answer.status
    except OSError as error:
        return f"failed ({type(error).__name__}: {error})"
    return f"HTTP {status} in {(time.perf_counter() - started) * 1000:.1f} ms"


def server_warnings(
    log_file: Path, levels: tuple[str, ...] = ("warning", "error", "critical")
) -> Counter:
    """How often a server logged each event of these levels (JSON lines)."""
    counts: Counter = Counter()
    for line in log_file.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in levels:
            detail = entry.get("error_type")
            event = str(entry.get("event", "?")).strip().splitlines()[0][:100]
            counts[f"{entry['level']}: {event}" + (f" ({detail})" if detail else "")] += 1
    return counts


def tail(path: Path, lines: int = 10) -> str:
    """The last lines of a log file that tell what went wrong: JSON lines above info, and
    other lines naming an error (tracebacks), cut at 300 characters."""
    if not path.exists():
        return f"({path.name}: no file)"
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if isinstance(entry, dict):
            if entry.get("level") not in ("info", "debug"):
                kept.append(line[:300])
        elif re.search(r"Error|Exception|Traceback|File \"", line):
            kept.append(line[:300])
    return "\n".join(kept[-lines:]) or "(nothing above info)"


class Profile:
    """py-spy recording one phase of the realtime worker (`--profile DIR`), or nothing."""

    def __init__(self, directory: Path | None, name: str, pid: int, seconds: float) -> None:
        self.out = directory / f"{name}.txt" if directory else None
        self.name = name
        self.process = py_spy(pid, seconds, self.out) if self.out else None

    def report(self) -> None:
        """Wait for the recording; print the frames in the most samples."""
        if self.process is None:
            return
        self.process.wait(timeout=600)
        if not self.out.exists():
            log.info("  profile %s: py-spy recorded nothing (ptrace rights?)", self.name)
            return
        project = [(share, f) for share, f in top_frames(self.out, 400) if "myapp/" in f]
        log.info("  profile %s (%s): the project's frames in the most samples", self.name, self.out)
        for share, frame in project[:12]:
            log.info("    %5.1f%%  %s", share * 100, frame[:150])
        log.info("    where the samples end (self time):")
        for share, frame in leaf_frames(self.out, 8):
            log.info("    %5.1f%%  %s", share * 100, frame[:150])


def leaf_frames(collapsed: Path, count: int) -> list[tuple[float, str]]:
    """(share of samples, frame) for the innermost frames of the most samples."""
    leaves: Counter[str] = Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if samples.isdigit():
            leaves[stack.rsplit(";", 1)[-1]] += int(samples)
    total = sum(leaves.values())
    return [(n / total, frame) for frame, n in leaves.most_common(count)] if total else []


# --- the stack -------------------------------------------------------------------------


def bench_env(workdir: Path, args: argparse.Namespace) -> dict[str, str]:
    """The production profile with throwaway secrets and only the limits the bench hits."""
    return {
        **server_env(
            "chat",
            APP_ENV="prod",
            LOG_LEVEL="INFO",
            **prod_secrets(),
            JWT_ACCESS_TOKEN_EXPIRES="3600",  # noqa: S106 - a lifetime, not a secret
            GUNICORN_WORKER_CONNECTIONS=str(args.worker_connections),
            CHAT_SEND_LIMIT=args.send_limit,
            PROMETHEUS_MULTIPROC_DIR=str(workdir / "prometheus-realtime"),
        ),
        **dict(item.split("=", 1) for item in args.env),
    }


def local_app(env: dict[str, str]) -> Any:
    """An app built here with the servers' settings (same database, secrets, Redis prefix),
    for setup: rows and tokens. Its metrics stay in memory; it logs warnings only."""
    os.environ.update({k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    os.environ["LOG_LEVEL"] = "WARNING"
    from myapp import create_app

    return create_app()


@dataclass(frozen=True, slots=True)
class Login:
    """One socket's identity: its user and an access token of its own login."""

    user_id: str
    token: str


def create_logins(app: Any, users: int, per_user: int) -> list[Login]:
    """`users` active users (role `user`), each with `per_user` open logins and tokens.

    What a login leaves behind that a socket's token needs: the user, its role, an open
    `auth_sessions` row, and an access token naming that session (`fam`).
    """
    from sqlalchemy import text

    from myapp.auth.tokens import issue_pair, refresh_expiry
    from myapp.core.db import new_id
    from myapp.core.passwords import hash_password
    from myapp.extensions import db

    with app.app_context():
        password_hash = hash_password(PASSWORD)  # one argon2 hash for all
        user_ids = [new_id() for _ in range(users)]
        role_id = db.session.execute(text("SELECT id FROM roles WHERE name = 'user'")).scalar_one()
        db.session.execute(
            text(
                "INSERT INTO users (id, email, name, password_hash, status, token_version)"
                " VALUES (:id, :email, :name, :hash, 'active', 0)"
            ),
            [
                {"id": uid, "email": f"chat-{n:05d}@example.com", "name": f"Chat {n}"}
                | {"hash": password_hash}
                for n, uid in enumerate(user_ids)
            ],
        )
        db.session.execute(
            text("INSERT INTO user_roles (user_id, role_id) VALUES (:user_id, :role_id)"),
            [{"user_id": uid, "role_id": role_id} for uid in user_ids],
        )
        sessions = [(new_id(), uid) for uid in user_ids for _ in range(per_user)]
        expires_at = refresh_expiry()
        db.session.execute(
            text(
                "INSERT INTO auth_sessions (id, user_id, expires_at, ip, user_agent)"
                " VALUES (:id, :user_id, :expires_at, '127.0.0.1', 'bench.chat')"
            ),
            [{"id": sid, "user_id": uid, "expires_at": expires_at} for sid, uid in sessions],
        )
        db.session.commit()
        logins = []
        for session_id, user_id in sessions:
            user = SimpleNamespace(id=user_id, role_names=["user"], token_version=0)
            pair = issue_pair(user=user, session_id=session_id, refresh_id=new_id())
            logins.append(Login(str(user_id), pair["access_token"]))
        db.engine.dispose()
    return logins


def vacuum_analyze(database_url: str) -> None:
    """`VACUUM ANALYZE` after the bulk inserts: fresh statistics, as a live database has,
    and no autovacuum starting in the middle of a measurement."""
    import psycopg
    from sqlalchemy import make_url

    url = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def enable_chat(app: Any) -> None:
    """Switch the `chat` flag on for everybody (off in production), as an operator would."""
    from myapp.core.context import SYSTEM, bind_actor
    from myapp.flags.service import set_flag

    with app.app_context():
        bind_actor(SYSTEM)
        set_flag(key="chat", enabled=True)


def create_room(app: Any, user_ids: list[str]) -> str:
    """A public room whose members are `user_ids` (the first one owns it); its id."""
    import uuid

    from sqlalchemy import insert

    from myapp.chat.models import MemberRole, Room, RoomMember
    from myapp.extensions import db

    with app.app_context():
        room = Room(name="bench", visibility="public", created_by=uuid.UUID(user_ids[0]))
        db.session.add(room)
        db.session.flush()
        room_id = room.id
        db.session.execute(
            insert(RoomMember),
            [
                {
                    "room_id": room_id,
                    "user_id": uuid.UUID(uid),
                    "role": MemberRole.OWNER if n == 0 else MemberRole.MEMBER,
                }
                for n, uid in enumerate(user_ids)
            ],
        )
        db.session.commit()
        db.engine.dispose()
    return str(room_id)


class CeleryWorker:
    """The `worker` role: `celery worker` (gevent pool, concurrency 50), logs to a file."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.log_path = workdir / "celery.log"
        self._out = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                str(BIN / "celery"),
                *("-A", "celery_worker.celery", "worker", "--pool", "gevent"),
                *("--concurrency", env.get("CELERY_CONCURRENCY", "50")),
                *("--queues", "default,chat,low", "--hostname", "bench-chat@%h"),
                *("--without-heartbeat", "--without-mingle", "--without-gossip"),
                *("--loglevel", "INFO"),
            ],
            cwd=ROOT,
            env={
                **os.environ,
                **env,
                "PROMETHEUS_MULTIPROC_DIR": str(workdir / "prometheus-worker"),
                "PYTHONPATH": str(ROOT),
            },
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60) -> CeleryWorker:
        """Return once it consumes (its "ready" line)."""
        wait_until(
            lambda: (
                self.process.poll() is not None
                or " ready." in self.log_path.read_text(errors="replace")
            ),
            timeout,
            "the Celery worker was not ready",
            interval=0.1,
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"celery exited:\n{tail(self.log_path)}")
        return self

    def stop(self) -> None:
        """Warm shutdown."""
        stop_process(self.process)
        self._out.close()


class LoadProcess:
    """One load generator (`bench/_chat_load.py`): its plan, its JSON lines, its orders."""

    def __init__(self, name: str, plan: dict[str, Any], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.process, self._err = start_load(
            "bench._chat_load", plan, workdir / f"{name}.plan.json", self.log_path
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line naming `event` (others are skipped); fails if the process ends."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise TimeoutError(f"{self.name}: no {event!r} within {timeout:.0f} s") from None
            if line is None:
                raise RuntimeError(f"{self.name} ended before {event!r}:\n{tail(self.log_path)}")
            if line["event"] == event:
                return line

    def order(self, command: str) -> None:
        """One command line."""
        if self.process.poll() is None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()

    def stop(self) -> None:
        """Wait for it to end after `close` (killed if it does not)."""
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._err.close()


def spawn_load(
    mode: str, tokens: list[str], args: argparse.Namespace, url: str, workdir: Path, **plan: Any
) -> list[LoadProcess]:
    """`--load-procs` generators, tokens dealt round-robin (the first goes to the first)."""
    count = max(1, min(args.load_procs, len(tokens)))
    procs = [
        LoadProcess(
            f"load-{mode}-{index}",
            {
                "mode": mode,
                "url": url,
                "tokens": tokens[index::count],
                "connect_concurrency": max(1, args.connect_concurrency // count),
                "connect_attempts": CONNECT_ATTEMPTS,
                "connect_timeout": CONNECT_TIMEOUT_S,
                **plan,
                **({"sender": index == 0} if mode == "room" else {}),
            },
            workdir,
        )
        for index in range(count)
    ]
    for proc in procs:
        proc.expect("started", 60)
    return procs


def close_load(procs: list[LoadProcess], event: str | None, timeout: float) -> list[dict]:
    """Order every generator to close; their `event` lines (if any), then wait for them."""
    for proc in procs:
        proc.order("close")
    lines = [proc.expect(event, timeout) for proc in procs] if event else []
    for proc in procs:
        proc.stop()
    return lines


def connect_summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The generators' `connected`/`ready` lines added up."""
    connect_ms = [ms for line in lines for ms in line["connect_ms"]]
    refusals: Counter = Counter()
    for line in lines:
        refusals.update(line["refusals"])
    return {
        "attempted": sum(line["attempted"] for line in lines),
        "connected": sum(line["connected"] for line in lines),
        "first_try": sum(line["first_try"] for line in lines),
        "attempts": sum(line["attempts"] for line in lines),
        "seconds": max(line["ended_at"] for line in lines)
        - min(line["started_at"] for line in lines),
        "connect_ms": connect_ms,
        "refusals": refusals,
        "load_rss_kib": sum(line["rss_kib"] for line in lines),
    }


# --- scenario 1: idle sockets ----------------------------------------------------------


@dataclass
class IdleRun:
    """What scenario 1 measured."""

    connect: dict[str, Any] = field(default_factory=dict)
    rss_kib: dict[str, int] = field(default_factory=dict)
    server_count: int | None = None
    health: str = ""
    hold_s: float = 0.0
    hold_cpu_s: float = 0.0
    connect_cpu_s: float = 0.0
    closed: dict[str, Any] = field(default_factory=dict)
    drained_s: float | None = None
    profile: Profile | None = None
    hold_profile: Profile | None = None


def run_idle(
    tokens: list[str], args: argparse.Namespace, base: str, pid: int, workdir: Path
) -> IdleRun:
    """Connect every client, hold them, close them; the worker's memory throughout."""
    run = IdleRun()
    run.rss_kib["before connecting"] = rss_kib(pid)
    url = base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    profile = Profile(args.profile, "connect", pid, 30)
    procs = spawn_load("idle", tokens, args, url, workdir)
    try:
        cpu = cpu_s(pid)
        run.connect = connect_summary([p.expect("connected", args.connect_timeout) for p in procs])
        run.connect_cpu_s = cpu_s(pid) - cpu
        run.profile = profile
        time.sleep(2)  # the last connects' work (presence, announcements) is done
        run.rss_kib["all connected"] = rss_kib(pid)
        run.server_count = server_sockets(base)
        run.health = probe(base)
        run.hold_profile = Profile(args.profile, "hold", pid, min(args.hold, 30))
        cpu, started = cpu_s(pid), time.monotonic()
        time.sleep(args.hold)
        run.hold_cpu_s, run.hold_s = cpu_s(pid) - cpu, time.monotonic() - started
        run.rss_kib["end of hold"] = rss_kib(pid)
        lines = close_load(procs, "closed", 120)
    except BaseException:
        close_load(procs, None, 0)
        raise
    run.closed = {
        "open": sum(line["open"] for line in lines),
        "pinged": sum(line["pinged"] for line in lines),
        "pings": sum(line["pings"] for line in lines),
        "lost": sum((Counter(line["lost"]) for line in lines), Counter()),
        "load_rss_kib": sum(line["rss_kib"] for line in lines),
    }
    started = time.monotonic()
    try:
        wait_until(lambda: server_sockets(base) == 0, 120, "sockets still counted", interval=0.5)
        run.drained_s = time.monotonic() - started
    except TimeoutError:
        run.drained_s = None
    time.sleep(1)
    run.rss_kib["after all closed"] = rss_kib(pid)
    return run


def report_idle(run: IdleRun, args: argparse.Namespace, logins: list[Login]) -> bool:
    """Print scenario 1; True when its goal is met."""
    c = run.connect
    users = len({login.user_id for login in logins[: args.clients]})
    log.info(
        "1. Idle sockets: %d clients (%d users x %d sockets, a login each), one realtime"
        " process (gunicorn gevent x1, worker_connections %d), %d load generator(s)",
        c["attempted"],
        users,
        args.sockets_per_user,
        args.worker_connections,
        args.load_procs,
    )
    log.info(
        "  connected %d / %d attempted (%d on the first attempt; %d attempts, %d in flight)",
        c["connected"],
        c["attempted"],
        c["first_try"],
        c["attempts"],
        args.connect_concurrency,
    )
    failed = sum(c["refusals"].values())
    log.info("  connect failures: %d attempt(s)%s", failed, "" if failed else " (none)")
    for reason, count in c["refusals"].most_common(8):
        log.info("    %5d x %s", count, reason)
    if c["connect_ms"]:
        log.info(
            "  connect time: all in %.1f s (%.0f/s); per client (TCP connect to namespace"
            " accepted, last attempt) p50 %.0f ms  p99 %.0f ms  max %.0f ms",
            c["seconds"],
            c["connected"] / max(c["seconds"], 1e-9),
            percentile(c["connect_ms"], 0.5),
            percentile(c["connect_ms"], 0.99),
            max(c["connect_ms"]),
        )
        log.info(
            "  worker CPU while connecting: %.1f s (%.1f ms per attempt)",
            run.connect_cpu_s,
            run.connect_cpu_s * 1000 / max(c["attempts"], 1),
        )
    if run.profile is not None:
        run.profile.report()
    log.info("  server's socket gauge with all connected: %s", run.server_count)
    log.info("  GET /health/live with all connected: %s", run.health)
    closed = run.closed
    log.info(
        "  held %.0f s: %d still open at the end; %d clients answered %d pings; lost: %s;"
        " worker CPU %.2f s (%.1f%% of a core)",
        run.hold_s,
        closed["open"],
        closed["pinged"],
        closed["pings"],
        dict(closed["lost"]) or "none",
        run.hold_cpu_s,
        100 * run.hold_cpu_s / max(run.hold_s, 1e-9),
    )
    if run.hold_profile is not None:
        run.hold_profile.report()
    rss = run.rss_kib
    log.info(
        "  worker RSS: %s",
        ", ".join(f"{name} {value / 1024:.1f} MiB" for name, value in rss.items()),
    )
    per_client = (rss["all connected"] - rss["before connecting"]) / max(c["connected"], 1)
    log.info(
        "  RSS per client: %.1f KiB (all connected - before, / connected); at the end of the"
        " hold %.1f KiB",
        per_client,
        (rss["end of hold"] - rss["before connecting"]) / max(c["connected"], 1),
    )
    log.info(
        "  after closing: the server counted 0 sockets %s",
        f"{run.drained_s:.1f} s later" if run.drained_s is not None else "NOT within 120 s",
    )
    log.info(
        "  load generators' RSS: %.0f MiB in all (%.1f KiB per client)",
        closed["load_rss_kib"] / 1024,
        closed["load_rss_kib"] / max(c["attempted"], 1),
    )
    held = min(c["connected"], closed["open"])
    met = held >= IDLE_GOAL
    log.info(
        "  goal >= %d idle clients held by one process: %s (%d held through the hold)",
        IDLE_GOAL,
        "MET" if met else "NOT met",
        held,
    )
    return met


# --- scenario 2: broadcast to a room ---------------------------------------------------


@dataclass
class BroadcastRun:
    """What scenario 2 measured."""

    ready: dict[str, Any] = field(default_factory=dict)
    joined: int = 0
    join_failures: Counter = field(default_factory=Counter)
    server_count: int | None = None
    delivered: list[dict[str, Any]] = field(default_factory=list)
    worker_cpu_s: float = 0.0
    celery_cpu_s: float = 0.0
    seconds: float = 0.0
    profile: Profile | None = None
    settle_s: float = 0.0
    settle_cpu_s: float = 0.0


def settle(pid: int, timeout: float = 90.0, idle_share: float = 0.2) -> tuple[float, float]:
    """Wait until the worker uses under `idle_share` of a core over one second (what the
    members' arrival set off is done); the seconds waited and the CPU it used meanwhile."""
    started, cpu_at_start = time.monotonic(), cpu_s(pid)
    while time.monotonic() - started < timeout:
        before = cpu_s(pid)
        time.sleep(1.0)
        if cpu_s(pid) - before < idle_share:
            break
    return time.monotonic() - started, cpu_s(pid) - cpu_at_start


def run_broadcast(
    tokens: list[str],
    room_id: str,
    args: argparse.Namespace,
    base: str,
    pids: tuple[int, int],
    workdir: Path,
) -> BroadcastRun:
    """Connect and join every member; one sends; collect every delivery."""
    run = BroadcastRun()
    url = base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    plan = {
        "room_id": room_id,
        "messages": args.messages,
        "warmup": args.warmup,
        "interval": args.interval,
        "collect_timeout": args.collect_timeout,
    }
    procs = spawn_load("room", tokens, args, url, workdir, **plan)
    try:
        lines = [p.expect("ready", args.connect_timeout) for p in procs]
        run.ready = connect_summary(lines)
        run.joined = sum(line["joined"] for line in lines)
        for proc in procs:
            run.join_failures.update(proc.expect("join_failures", 10)["failures"])
        # Each member coming online is announced to the members already in the room
        # (presence:update): 1,000 arrivals are ~500,000 packets. Measure that apart,
        # and let it finish before the messages are timed.
        run.settle_s, run.settle_cpu_s = settle(pids[0])
        run.server_count = server_sockets(base)
        worker, celery = cpu_s(pids[0]), cpu_s(pids[1])
        started = time.monotonic()
        seconds = (args.warmup + args.messages) * args.interval + 1
        run.profile = Profile(args.profile, "broadcast", pids[0], seconds)
        for proc in procs:
            proc.order("go")
        limit = (args.warmup + args.messages) * args.interval + 1 + args.collect_timeout + 60
        run.delivered = [p.expect("delivered", limit) for p in procs]
        run.seconds = time.monotonic() - started
        (workdir / "deliveries.json").write_text(json.dumps(run.delivered))  # for a closer look
        run.worker_cpu_s, run.celery_cpu_s = cpu_s(pids[0]) - worker, cpu_s(pids[1]) - celery
        close_load(procs, None, 0)
    except BaseException:
        close_load(procs, None, 0)
        raise
    return run


def report_broadcast(run: BroadcastRun, args: argparse.Namespace) -> bool:
    """Print scenario 2; True when its goal is met."""
    ready = run.ready
    log.info(
        "2. Broadcast: a room of %d members (distinct users), 1 sender, %d messages %.0f ms"
        " apart (after %d warm-up messages), %d load generator(s)",
        ready["attempted"],
        args.messages,
        args.interval * 1000,
        args.warmup,
        args.load_procs,
    )
    log.info(
        "  members connected %d / %d (connect %.1f s), joined %d; server's socket gauge %s",
        ready["connected"],
        ready["attempted"],
        ready["seconds"],
        run.joined,
        run.server_count,
    )
    for reason, count in (ready["refusals"] + run.join_failures).most_common(8):
        log.info("    %5d x %s", count, reason)
    log.info(
        "  after the joins the realtime worker stayed busy %.1f s (%.1f s CPU: presence of"
        " members coming online, announced to the room) before the messages were timed",
        run.settle_s,
        run.settle_cpu_s,
    )
    sender = next(line for line in run.delivered if "sent" in line)
    ack_ms = sender["ack_ms"]
    log.info(
        "  sent %d; ACKs: %s%s",
        sender["sent"],
        sender["acks"],
        f"; ACK time p50 {percentile(ack_ms, 0.5):.1f} ms  p99 {percentile(ack_ms, 0.99):.1f}"
        f" ms  max {max(ack_ms):.1f} ms"
        if ack_ms
        else "",
    )
    expected = args.messages * ready["attempted"]
    received = sum(line["received"] for line in run.delivered)
    complete = sum(line["complete"] for line in run.delivered)
    log.info(
        "  deliveries: expected %d (%d x %d), received %d (%.2f%%); duplicates %d; members"
        " with every message %d / %d",
        expected,
        args.messages,
        ready["attempted"],
        received,
        100 * received / max(expected, 1),
        sum(line["duplicates"] for line in run.delivered),
        complete,
        ready["attempted"],
    )
    latencies = [ms for line in run.delivered for ms in line["latencies_ms"]]
    if not latencies:
        log.info("  no delivery arrived: goal NOT met")
        return False
    p99 = percentile(latencies, 0.99)
    log.info(
        "  send-to-receive latency: p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms",
        percentile(latencies, 0.5),
        percentile(latencies, 0.9),
        p99,
        max(latencies),
    )
    spreads: dict[int, list[float]] = {}
    for line in run.delivered:
        for seq, (first, last) in line["spread"].items():
            known = spreads.setdefault(int(seq), [first, last])
            known[0], known[1] = min(known[0], first), max(known[1], last)
    firsts = [first for first, _ in spreads.values()]
    lasts = [last for _, last in spreads.values()]
    log.info(
        "  per message: first member reached p50 %.1f ms  p99 %.1f ms; last member reached"
        " p50 %.1f ms  p99 %.1f ms",
        percentile(firsts, 0.5),
        percentile(firsts, 0.99),
        percentile(lasts, 0.5),
        percentile(lasts, 0.99),
    )
    log.info(
        "  CPU during the %.1f s of sending and collecting: realtime worker %.1f s, Celery"
        " worker %.1f s, load generators %.1f s",
        run.seconds,
        run.worker_cpu_s,
        run.celery_cpu_s,
        sum(line["cpu_s"] for line in run.delivered),
    )
    if run.profile is not None:
        run.profile.report()
    met = p99 < LATENCY_GOAL_MS and received == expected
    log.info(
        "  goal p99 < %.0f ms (every delivery received): %s",
        LATENCY_GOAL_MS,
        "MET" if met else "NOT met",
    )
    return met


# --- main ------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """Command-line options (defaults: the goals)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=IDLE_GOAL, help="idle sockets")
    parser.add_argument("--sockets-per-user", type=int, default=1)
    parser.add_argument("--members", type=int, default=1000, help="room members")
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3, help="uncounted first messages")
    parser.add_argument("--interval", type=float, default=0.15, help="seconds between sends")
    parser.add_argument("--load-procs", type=int, default=2)
    parser.add_argument("--connect-concurrency", type=int, default=200)
    parser.add_argument("--connect-timeout", type=float, default=300)
    parser.add_argument("--hold", type=float, default=40, help="seconds all are held")
    parser.add_argument("--collect-timeout", type=float, default=10)
    parser.add_argument("--worker-connections", type=int, default=12_000)
    parser.add_argument("--send-limit", default="1000 per 10 seconds", help="CHAT_SEND_LIMIT")
    parser.add_argument("--skip", choices=("idle", "broadcast"), help="run only the other one")
    parser.add_argument(
        "--profile", type=Path, help="record the realtime worker with py-spy into this directory"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="project setting"
    )
    return parser.parse_args()


def print_failure_logs(workdir: Path, gunicorn_log: Path) -> None:
    """The tails of the logs, after a failure."""
    for path in [gunicorn_log, workdir / "celery.log", *sorted(workdir.glob("load-*.log"))]:
        log.info("--- tail of %s ---\n%s", path.name, tail(path))


def main() -> int:  # noqa: PLR0915 - one linear script
    """Set up, run both scenarios, print the report."""
    args = parse_args()
    begun = time.monotonic()
    soft, _ = raise_nofile(max(args.clients, args.members) + 1000)
    workdir = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # the database setup: no migration lines
    env = bench_env(workdir, args)
    app = local_app(env)
    users = max(math.ceil(args.clients / args.sockets_per_user), args.members)
    started = time.perf_counter()
    logins = create_logins(app, users, args.sockets_per_user)
    enable_chat(app)
    vacuum_analyze(env["DATABASE_URL"])
    log.info(
        "setup: %d users, %d logins and access tokens in %.1f s; nofile %d; APP_ENV=prod;"
        " GUNICORN_WORKER_CONNECTIONS=%d; CHAT_SEND_LIMIT=%r; logs in %s",
        users,
        len(logins),
        time.perf_counter() - started,
        soft,
        args.worker_connections,
        args.send_limit,
        workdir,
    )
    gunicorn_log, ok = workdir / "realtime.log", True
    try:
        with gunicorn("wsgi:app", workers=1, env=env, log_file=gunicorn_log) as (master, base):
            pid = worker_pid(master.pid)
            celery = CeleryWorker(env, workdir).wait_ready()
            try:
                if args.skip != "idle":
                    tokens = [login.token for login in logins[: args.clients]]
                    run = run_idle(tokens, args, base, pid, workdir)
                    ok = report_idle(run, args, logins) and ok
                if args.skip != "broadcast":
                    first: dict[str, str] = {}
                    for login in logins:  # one socket per member: distinct users
                        first.setdefault(login.user_id, login.token)
                    members = list(first)[: args.members]
                    room_id = create_room(app, members)
                    vacuum_analyze(env["DATABASE_URL"])
                    tokens = [first[user_id] for user_id in members]
                    broadcast = run_broadcast(
                        tokens, room_id, args, base, (pid, celery.process.pid), workdir
                    )
                    ok = report_broadcast(broadcast, args) and ok
            finally:
                celery.stop()
    except Exception:
        print_failure_logs(workdir, gunicorn_log)
        raise
    logged = server_warnings(gunicorn_log) + server_warnings(workdir / "celery.log")
    for event, count in logged.most_common(10):
        log.info("logged by the servers %5d x %s", count, event)
    if not ok or any(not event.startswith("warning") for event in logged):
        print_failure_logs(workdir, gunicorn_log)
    log.info("goals met: %s (%.0f s in all)", "yes" if ok else "NO", time.monotonic() - begun)
    log.info("logs: %s", workdir)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

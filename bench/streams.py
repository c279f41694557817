"""Long-lived answers: 1,000 event streams on one worker, and a 200 MiB download.

Both scenarios run the project (`wsgi:app`) in the production profile (`APP_ENV=prod`,
generated secrets, access log at INFO written to a file) under our gunicorn config with ONE
gevent worker, on a throwaway database and the shared Redis. Only what the scenarios need is
raised: rate limits (they still count in Redis), token lifetime, the file size limit and the
login hash threads (setup only: the 1,000 argon2 logins use both cores). Clients run in this
process on gevent, sharing the machine's cores with the server.

1. Event streams (`GET /v1/events/stream`, Server-Sent Events). `--clients` (1,000) users
   are inserted with SQL (one argon2 hash for all) and logged in through the API. Every
   client then opens its stream at once (`--connect-concurrency`), as after a restart,
   with `http.client`, and reads until the `: connected` comment; a refused attempt is tried
   again after a random 0.5-3 s, so the first attempts measure the reconnection storm and
   the retries get every stream open. Then, for each of `--rounds` rounds, this process
   publishes ONE event to every user with `myapp.core.streams.publish` (an app built here
   with the server's settings: the same Redis key prefix); the event carries its publish
   time and each client notes when it arrived. Reported: opened on the first attempt, the
   refusals, time until all were open; per round and as medians, delivered count and
   delivery latency p50/p99/max (goal: p99 < 200 ms), with the CPU the worker and this
   process spent; the worker's RSS (VmRSS) at start, before the clients connect, with all
   connected and after delivery; `GET /health/live` with every stream open (the worker
   accepts at most `GUNICORN_WORKER_CONNECTIONS` connections and every stream holds one);
   and the warnings the server logged.
2. Download throughput. A 200 MiB file (PNG signature + random bytes) is uploaded through
   `POST /v1/files` (flag `files.upload` switched on from here: it is off in production),
   downloaded once with a Python client in 1 MiB reads to check its SHA-256, then
   `--downloads` times with `curl -o /dev/null`, alternating with `cat <stored blob> >
   /dev/null` of the same bytes (page cache, no network) so machine noise hits both.
   Reported: median MB/s (10^6 bytes) of each and the ratio API/cat (no goal: a yardstick).

    .venv/bin/python -m bench.streams [--clients 1000] [--rounds 3] [--downloads 5]

Needs PostgreSQL and Redis at DATABASE_URL / REDIS_URL, and curl. Server logs stay in the
printed directory.
"""

from gevent import monkey

monkey.patch_all()  # the stream clients are greenlets: patch before anything imports socket

import argparse  # noqa: E402 - after patching
import hashlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.lock import BoundedSemaphore  # noqa: E402
from gevent.pool import Pool  # noqa: E402

from bench._report import report_logger, rss_kib, worker_pid  # noqa: E402
from bench._setup import access_token, prod_secrets, server_env  # noqa: E402
from tests.support.servers import gunicorn  # noqa: E402

log = report_logger("bench.streams")
STREAM = "/v1/events/stream"
EVENT_TYPE = "bench.ping"
PASSWORD = "stream-bench-password"  # noqa: S105 - throwaway accounts in a throwaway database
MIB = 1024 * 1024
MB = 1_000_000
LATENCY_GOAL_MS = 200.0
MAX_ATTEMPTS = 20
RETRY_DELAY_S = (0.5, 3.0)
_jitter = random.Random()  # noqa: S311 - spreads retries, nothing secret


# --- the server --------------------------------------------------------------------------


def bench_env(workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The production profile with throwaway secrets and only the limits the scenarios hit."""
    return {
        **server_env(
            "streams",
            APP_ENV="prod",
            LOG_LEVEL="INFO",
            **prod_secrets(),
            JWT_ACCESS_TOKEN_EXPIRES="3600",  # noqa: S106 - a lifetime, not a secret
            RATELIMIT_DEFAULT="1000000000/minute",
            RATELIMIT_LOGIN_PER_IP="1000000/minute",
            RATELIMIT_LOGIN_PER_ACCOUNT="1000000/minute",
            PASSWORD_HASH_THREADS="2",  # noqa: S106 - a thread count; 1,000 logins on both cores
            FILES_MAX_BYTES=str(256 * MIB),
            FILES_LOCAL_DIR=str(workdir / "files"),
            PROMETHEUS_MULTIPROC_DIR=str(workdir / "prometheus"),
        ),
        **extra,
    }


def local_app(env: dict[str, str]) -> Any:
    """An app built here with the server's settings (same Redis prefix, same database).

    Its metrics stay in memory (no multiprocess directory: the server's must list only
    the server's workers) and it logs warnings only (stdout is the report).
    """
    os.environ.update({k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    os.environ["LOG_LEVEL"] = "WARNING"
    from myapp import create_app

    return create_app()


def rss_mib(pid: int) -> float:
    """Resident set size of `pid`, MiB."""
    return rss_kib(pid) / 1024


def cpu_s(pid: int) -> float:
    """CPU time (user + system) `pid` has used, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (`share` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]


def host_port(base: str) -> tuple[str, int]:
    """(host, port) of `http://host:port`."""
    parts = urlsplit(base)
    return parts.hostname, parts.port


# --- scenario 1: event streams ------------------------------------------------------------


def create_users(app: Any, count: int) -> list[tuple[str, str]]:
    """`count` active users with role `user`, inserted in two batched INSERTs; (id, email)."""
    from sqlalchemy import text

    from myapp.core.db import new_id
    from myapp.core.passwords import hash_password
    from myapp.extensions import db

    with app.app_context():
        password_hash = hash_password(PASSWORD)  # one argon2 hash, as the users service makes
        users = [(str(new_id()), f"stream-{n:05d}@example.com") for n in range(count)]
        rows = [
            {"id": user_id, "email": email, "name": f"Stream {n}", "hash": password_hash}
            for n, (user_id, email) in enumerate(users)
        ]
        role_id = db.session.execute(text("SELECT id FROM roles WHERE name = 'user'")).scalar_one()
        db.session.execute(
            text(
                "INSERT INTO users (id, email, name, password_hash, status, token_version)"
                " VALUES (:id, :email, :name, :hash, 'active', 0)"
            ),
            rows,
        )
        db.session.execute(
            text("INSERT INTO user_roles (user_id, role_id) VALUES (:user_id, :role_id)"),
            [{"user_id": i, "role_id": role_id} for i, _ in users],
        )
        db.session.commit()
        db.engine.dispose()
    return users


def log_in_all(base: str, emails: list[str], concurrency: int) -> list[str]:
    """Access tokens of `emails`, logged in through the API, `concurrency` at a time."""
    host, port = host_port(base)

    def log_in(email: str) -> str:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            body = json.dumps({"email": email, "password": PASSWORD})
            conn.request(
                "POST", "/v1/auth/login", body, headers={"Content-Type": "application/json"}
            )
            answer = conn.getresponse()
            payload = answer.read()
            if answer.status != 200:
                raise SystemExit(f"login of {email}: HTTP {answer.status} {payload[:300]!r}")
            return json.loads(payload)["data"]["accessToken"]
        finally:
            conn.close()

    return list(Pool(concurrency).imap(log_in, emails))


@dataclass(eq=False)
class StreamClient:
    """One user's event stream, opened and read by a greenlet.

    A refused attempt (an answer other than 200, or a connection error) is tried again
    after a random 0.5-3 s, as a client with a backoff would (`EventSource` itself gives
    up on a non-200 answer): the first attempts measure a reconnection storm, the retries
    make sure every stream is open for the delivery rounds.
    """

    user_id: str
    token: str
    attempts: int = 0
    connect_s: float | None = None  # start (gate wait included) -> `: connected` read
    refusals: list[str] = field(default_factory=list)
    latencies: dict[int, float] = field(default_factory=dict)  # round -> seconds
    error: str | None = None  # why it is not (or no longer) open
    conn: http.client.HTTPConnection | None = None
    greenlet: gevent.Greenlet | None = None

    @property
    def is_open(self) -> bool:
        """Connected and still reading."""
        return self.connect_s is not None and self.error is None

    def run(self, host: str, port: int, gate: BoundedSemaphore, settled: Any) -> None:
        """Open the stream (`gate` bounds the attempts in flight), call `settled()` once it
        is open or given up on, then read events until killed."""
        started, opened, reported = time.perf_counter(), None, False
        try:
            while opened is None and self.attempts < MAX_ATTEMPTS:
                if self.attempts:
                    gevent.sleep(_jitter.uniform(*RETRY_DELAY_S))
                self.attempts += 1
                with gate:
                    opened = self._open(host, port)
            if opened is None:
                self.error = self.refusals[-1]
                return
            self.connect_s = time.perf_counter() - started
            settled()
            reported = True
            self._read(*opened)
        except (OSError, http.client.HTTPException) as error:
            self.error = f"{type(error).__name__}: {error}"
        finally:
            if self.conn is not None:
                self.conn.close()  # leaving: the server notices at its next write
            if not reported:
                settled()

    def _open(self, host: str, port: int) -> tuple[http.client.HTTPResponse, bytes] | None:
        """One attempt: the answer and what followed `: connected`, or None (refused)."""
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            self.conn.request(
                "GET",
                STREAM,
                headers={"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"},
            )
            answer = self.conn.getresponse()
            if answer.status != 200:
                self.refusals.append(f"HTTP {answer.status} {answer.read(200)!r}")
                return None
            buffer = b""
            while b"\n\n" not in buffer:
                chunk = answer.read1(65536)
                if not chunk:
                    raise ConnectionError("the stream ended before `: connected`")
                buffer += chunk
        except (OSError, http.client.HTTPException) as error:
            self.refusals.append(f"{type(error).__name__}: {error}")
            return None
        first, rest = buffer.split(b"\n\n", 1)
        if b": connected" not in first:
            raise http.client.HTTPException(f"unexpected first message {first!r}")
        self.conn.sock.settimeout(None)  # an endless answer: silence is not an error
        return answer, rest

    def _read(self, answer: http.client.HTTPResponse, buffer: bytes) -> None:
        """Read messages until the stream ends; note when each bench event arrived."""
        marker = f"event: {EVENT_TYPE}\n".encode()
        while True:
            chunk = answer.read1(65536)
            received = time.time()
            if not chunk:
                self.error = "the server ended the stream"
                return
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                if marker in block:
                    for line in block.decode().split("\n"):
                        if line.startswith("data: "):
                            data = json.loads(line[6:])
                            self.latencies[data["round"]] = received - data["sentAt"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One publish round."""

    delivered: int
    expected: int
    publish_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_mib: float
    worker_cpu_s: float
    bench_cpu_s: float


def publish_round(
    app: Any, clients: list[StreamClient], number: int, timeout: float, pid: int
) -> Delivery:
    """One event to every connected client; wait for them; the latencies."""
    from myapp.core.streams import publish

    connected = [c for c in clients if c.is_open]
    worker_cpu, bench_cpu = cpu_s(pid), time.process_time()
    started = time.perf_counter()
    with app.app_context():
        for client in connected:
            if (
                publish(client.user_id, EVENT_TYPE, {"sentAt": time.time(), "round": number})
                is None
            ):
                raise SystemExit("publish failed: Redis down?")
    publish_s = time.perf_counter() - started
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(number not in c.latencies for c in connected):
        gevent.sleep(0.05)
    latencies = [c.latencies[number] * 1000 for c in connected if number in c.latencies]
    if not latencies:
        raise SystemExit(f"round {number}: no event arrived within {timeout} s")
    return Delivery(
        delivered=len(latencies),
        expected=len(connected),
        publish_s=publish_s,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        max_ms=max(latencies),
        rss_mib=rss_mib(pid),
        worker_cpu_s=cpu_s(pid) - worker_cpu,
        bench_cpu_s=time.process_time() - bench_cpu,
    )


def probe(base: str, timeout: float) -> str:
    """`GET /health/live` with a deadline: its status and time, or why it failed."""
    host, port = host_port(base)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.request("GET", "/health/live")
        status = conn.getresponse().status
        return f"HTTP {status} in {(time.perf_counter() - started) * 1000:.1f} ms"
    except (OSError, http.client.HTTPException) as error:
        return f"no answer within {timeout:.0f} s ({type(error).__name__})"
    finally:
        conn.close()


@dataclass
class StreamsRun:
    """What scenario 1 measured."""

    users: int = 0
    created_s: float = 0.0
    login_s: float = 0.0
    connect_s: float = 0.0
    clients: list[StreamClient] = field(default_factory=list)
    rss_mib: dict[str, float] = field(default_factory=dict)
    health: str = ""
    rounds: list[Delivery] = field(default_factory=list)
    still_open: int = 0
    warnings: Counter = field(default_factory=Counter)


def server_warnings(log_file: Path) -> Counter:
    """How often the server logged each warning or error event (JSON lines)."""
    counts: Counter = Counter()
    for line in log_file.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            detail = entry.get("error_type")
            counts[entry.get("event", "?") + (f" ({detail})" if detail else "")] += 1
    return counts


def open_streams(clients: list[StreamClient], base: str, args: argparse.Namespace) -> float:
    """Start every client's greenlet; seconds until all are open or given up on."""
    host, port = host_port(base)
    gate = BoundedSemaphore(args.connect_concurrency)
    remaining = [len(clients)]
    all_settled = Event()

    def settled() -> None:
        remaining[0] -= 1
        if remaining[0] == 0:
            all_settled.set()

    started = time.perf_counter()
    for client in clients:
        client.greenlet = gevent.spawn(client.run, host, port, gate, settled)
    all_settled.wait(args.connect_timeout)
    return time.perf_counter() - started


def run_streams(
    app: Any, args: argparse.Namespace, env: dict[str, str], workdir: Path
) -> StreamsRun:
    """Scenario 1: users, logins, streams, publish rounds."""
    run = StreamsRun(users=args.clients)
    started = time.perf_counter()
    users = create_users(app, args.clients)
    run.created_s = time.perf_counter() - started
    log_file = workdir / "streams.log"
    with gunicorn("wsgi:app", workers=1, env=env, log_file=log_file) as (master, base):
        pid = worker_pid(master.pid)
        run.rss_mib["at start"] = rss_mib(pid)
        started = time.perf_counter()
        tokens = log_in_all(base, [email for _, email in users], args.login_concurrency)
        run.login_s = time.perf_counter() - started
        gevent.sleep(6)  # the logins' keep-alive connections (5 s) are closed by now
        run.rss_mib["before connecting"] = rss_mib(pid)
        run.clients = [
            StreamClient(user_id, token) for (user_id, _), token in zip(users, tokens, strict=True)
        ]
        run.connect_s = open_streams(run.clients, base, args)
        gevent.sleep(1)  # let the worker settle before reading its memory
        run.rss_mib["all connected"] = rss_mib(pid)
        run.health = probe(base, args.probe_timeout)
        for number in range(1, args.rounds + 1):
            run.rounds.append(publish_round(app, run.clients, number, args.delivery_timeout, pid))
            gevent.sleep(1)
        run.still_open = sum(1 for c in run.clients if c.is_open)
        gevent.killall([c.greenlet for c in run.clients], timeout=10)  # each closes its socket
    run.warnings = server_warnings(log_file)
    return run


def report_streams(run: StreamsRun, args: argparse.Namespace) -> bool:
    """Print scenario 1; True when its goals are met."""
    connected = [c for c in run.clients if c.connect_s is not None]
    first_try = sum(1 for c in connected if c.attempts == 1)
    refusals = Counter(r[:110] for c in run.clients for r in c.refusals)
    connect_ms = [c.connect_s * 1000 for c in connected]
    log.info(
        "Event streams: %d users, gunicorn gevent x1 (production profile), %d publish rounds",
        run.users,
        len(run.rounds),
    )
    log.info(
        "  setup: users inserted in %.1f s, logged in through the API in %.1f s (%d at a time)",
        run.created_s,
        run.login_s,
        args.login_concurrency,
    )
    log.info(
        "  connect (%d opening at once): %d/%d open on the first attempt; %d/%d open after"
        " %.2f s (%d attempts in all, retries 0.5-3 s apart)",
        args.connect_concurrency,
        first_try,
        run.users,
        len(connected),
        run.users,
        run.connect_s,
        sum(c.attempts for c in run.clients),
    )
    if connect_ms:
        log.info(
            "    per client, start to `: connected`: p50 %.0f ms  p99 %.0f ms  max %.0f ms",
            percentile(connect_ms, 0.5),
            percentile(connect_ms, 0.99),
            max(connect_ms),
        )
    for refusal, count in refusals.most_common():
        log.info("    refused %4d x %s", count, refusal)
    log.info("  GET /health/live with every stream open: %s", run.health)
    for number, result in enumerate(run.rounds, 1):
        log.info(
            "  round %d: delivered %d/%d (published in %.2f s); p50 %6.1f ms  p99 %6.1f ms"
            "  max %6.1f ms; RSS %.1f MiB; CPU worker %.2f s, bench %.2f s",
            number,
            result.delivered,
            result.expected,
            result.publish_s,
            result.p50_ms,
            result.p99_ms,
            result.max_ms,
            result.rss_mib,
            result.worker_cpu_s,
            result.bench_cpu_s,
        )
    p99 = statistics.median(r.p99_ms for r in run.rounds)
    delivered = statistics.median(r.delivered for r in run.rounds)
    log.info(
        "  median of rounds: delivered %.0f/%d; p50 %.1f ms  p99 %.1f ms (goal < %.0f)"
        "  max %.1f ms",
        delivered,
        len(connected),
        statistics.median(r.p50_ms for r in run.rounds),
        p99,
        LATENCY_GOAL_MS,
        statistics.median(r.max_ms for r in run.rounds),
    )
    rss = run.rss_mib
    rss["after delivery (median)"] = statistics.median(r.rss_mib for r in run.rounds)
    log.info("  worker RSS: %s", ", ".join(f"{k} {v:.1f} MiB" for k, v in rss.items()))
    log.info(
        "    per open stream: %.1f KiB",
        (rss["all connected"] - rss["before connecting"]) * 1024 / max(len(connected), 1),
    )
    log.info("  streams still open after the last round: %d/%d", run.still_open, run.users)
    for event, count in run.warnings.most_common():
        log.info("  server warning %5d x %s", count, event)
    return len(connected) == delivered == run.users and p99 < LATENCY_GOAL_MS


# --- scenario 2: a 200 MiB download -------------------------------------------------------


def write_png(path: Path, size: int) -> str:
    """A `size`-byte file: the PNG signature, then random bytes; its SHA-256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        chunk = b"\x89PNG\r\n\x1a\n" + os.urandom(8 * MIB - 8)
        written = 0
        while written < size:
            piece = chunk[: size - written]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
            chunk = os.urandom(8 * MIB)
    return digest.hexdigest()


def enable_uploads(app: Any) -> None:
    """Switch `files.upload` on (off in production), as an operator would."""
    from myapp.core.context import SYSTEM, bind_actor
    from myapp.flags.service import set_flag

    with app.app_context():
        bind_actor(SYSTEM)
        set_flag(key="files.upload", enabled=True)


def upload(base: str, token: str, path: Path) -> tuple[dict[str, Any], float]:
    """`POST /v1/files` with curl; the file's metadata and the seconds it took."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            *("curl", "-sS", "--fail-with-body", "-H", f"Authorization: Bearer {token}"),
            *("-H", "Expect:", "-F", f"file=@{path};filename=bench.png;type=image/png"),
            f"{base}/v1/files",
        ],
        capture_output=True,
        check=False,
        timeout=300,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"upload failed: {result.stdout[:500]!r} {result.stderr[:500]!r}")
    return json.loads(result.stdout)["data"], elapsed


def stored_path(app: Any, file_id: str, files_dir: Path) -> Path:
    """Where local storage keeps the file's bytes (`files.storage_key`)."""
    from sqlalchemy import text

    from myapp.extensions import db

    with app.app_context():
        key = db.session.execute(
            text("SELECT storage_key FROM files WHERE id = :id"), {"id": uuid.UUID(file_id)}
        ).scalar_one()
        db.engine.dispose()
    return files_dir / key


def download_sha256(base: str, token: str, file_id: str) -> tuple[str, int, float]:
    """Download with `http.client` in 1 MiB reads; (SHA-256, bytes, seconds)."""
    host, port = host_port(base)
    conn = http.client.HTTPConnection(host, port, timeout=60)
    digest, size = hashlib.sha256(), 0
    started = time.perf_counter()
    try:
        conn.request(
            "GET", f"/v1/files/{file_id}/content", headers={"Authorization": f"Bearer {token}"}
        )
        answer = conn.getresponse()
        if answer.status != 200:
            raise SystemExit(f"download: HTTP {answer.status} {answer.read(300)!r}")
        while chunk := answer.read(MIB):
            digest.update(chunk)
            size += len(chunk)
    finally:
        conn.close()
    return digest.hexdigest(), size, time.perf_counter() - started


def timed(command: list[str], **kwargs: Any) -> tuple[float, subprocess.CompletedProcess]:
    """Run `command`; (seconds, result)."""
    started = time.perf_counter()
    result = subprocess.run(command, check=True, timeout=120, **kwargs)
    return time.perf_counter() - started, result


def download_scenario(
    app: Any, args: argparse.Namespace, env: dict[str, str], workdir: Path
) -> bool:
    """Scenario 2; True when the download is intact (throughput has no goal here)."""
    source = workdir / "upload.png"
    size = args.file_mib * MIB
    sent_sha256 = write_png(source, size)
    with gunicorn("wsgi:app", workers=1, env=env, log_file=workdir / "files.log") as (_, base):
        enable_uploads(app)
        token = access_token(base)
        meta, upload_s = upload(base, token, source)
        blob = stored_path(app, meta["id"], Path(env["FILES_LOCAL_DIR"]))
        source.unlink()  # only the stored copy is read from now on
        got_sha256, got_size, python_s = download_sha256(base, token, meta["id"])
        api, cat = [], []
        url = f"{base}/v1/files/{meta['id']}/content"
        curl = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}"]
        curl += ["-H", f"Authorization: Bearer {token}", url]
        for n in range(args.downloads):
            for which in ("api", "cat") if n % 2 == 0 else ("cat", "api"):
                if which == "api":
                    seconds, result = timed(curl, capture_output=True, text=True)
                    if int(result.stdout) != size:
                        raise SystemExit(f"curl got {result.stdout} bytes, not {size}")
                    api.append(size / seconds / MB)
                else:
                    with Path(os.devnull).open("wb") as sink:
                        seconds, _ = timed(["cat", str(blob)], stdout=sink)
                    cat.append(size / seconds / MB)
    shutil.rmtree(env["FILES_LOCAL_DIR"])  # 200 MiB; the logs stay
    intact = got_sha256 == sent_sha256 == meta["sha256"] and got_size == size
    api_mbs, cat_mbs = statistics.median(api), statistics.median(cat)
    log.info("Download: a %d MiB file, gunicorn gevent x1 (production profile)", args.file_mib)
    log.info(
        "  upload (curl -F): %.2f s, %.0f MB/s; stored as %s",
        upload_s,
        size / upload_s / MB,
        blob.relative_to(env["FILES_LOCAL_DIR"]),
    )
    log.info(
        "  SHA-256 of a download (http.client, 1 MiB reads, %.0f MB/s): %s",
        size / python_s / MB,
        "matches the upload" if intact else f"MISMATCH {got_sha256} ({got_size} bytes)",
    )
    log.info(
        "  API  (curl -o /dev/null): median %7.0f MB/s   (rounds: %s)",
        api_mbs,
        ", ".join(f"{v:.0f}" for v in api),
    )
    log.info(
        "  cat  (stored blob):       median %7.0f MB/s   (rounds: %s)",
        cat_mbs,
        ", ".join(f"{v:.0f}" for v in cat),
    )
    log.info("  ratio API/cat: %.3f", api_mbs / cat_mbs)
    return intact


def main() -> int:
    """Run both scenarios and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connect-concurrency", type=int, default=1000)
    parser.add_argument("--login-concurrency", type=int, default=16)
    parser.add_argument("--connect-timeout", type=float, default=60)
    parser.add_argument("--delivery-timeout", type=float, default=10)
    parser.add_argument("--probe-timeout", type=float, default=3)
    parser.add_argument("--file-mib", type=int, default=200)
    parser.add_argument("--downloads", type=int, default=5)
    parser.add_argument("--skip", choices=("streams", "download"), help="run only the other one")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="project setting"
    )
    args = parser.parse_args()
    if not shutil.which("curl"):
        log.info("curl is missing: apt-get install curl")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    env = bench_env(workdir, dict(item.split("=", 1) for item in args.env))
    app, ok = local_app(env), True
    if args.skip != "streams":
        ok = report_streams(run_streams(app, args, env, workdir), args) and ok
    if args.skip != "download":
        ok = download_scenario(app, args, env, workdir) and ok
    log.info("goals met: %s", "yes" if ok else "NO")
    log.info("server logs: %s", workdir)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

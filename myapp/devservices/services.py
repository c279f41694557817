"""Which services are configured, reusing or starting them, and stopping what we started."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from .base import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    Endpoint,
    ManagedServer,
    ServiceError,
    log,
    parse_endpoint,
    port_answers,
)
from .postgres import EmbeddedPostgres
from .redis import EmbeddedRedis

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


def stop_all(started: list[ManagedServer]) -> None:
    """Stop the servers we started, newest first, logging (not raising) failures."""
    for server in reversed(started):
        try:
            if server.stop():
                log.info("%s: stopped the embedded server", server.endpoint)
        except Exception:
            log.exception("%s: could not stop the embedded server", server.endpoint)

"""Brokers for the reliability tests: the machine's Redis and RabbitMQ (a vhost per test)."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import RUN_ID, libpq_url, redis_test_url

RABBITMQ = ("127.0.0.1", 5672)
_vhosts = itertools.count()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _rabbitmq_answers() -> bool:
    try:
        socket.create_connection(RABBITMQ, timeout=1).close()
    except OSError:
        return False
    return shutil.which("rabbitmqctl") is not None


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request) -> Iterator[str]:
    """The machine's Redis (this run's key prefix) or RabbitMQ (a fresh vhost)."""
    if request.param == "redis":
        yield redis_test_url()
        return
    if not _rabbitmq_answers():
        pytest.skip("RabbitMQ (with rabbitmqctl) is not on this machine")
    vhost = f"myapp-test-{RUN_ID}-{next(_vhosts)}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def committed_rows(database_url) -> Iterator[None]:
    """For tests whose rows must commit (a worker reads them): cleaned up afterwards."""
    yield
    with psycopg.connect(libpq_url(database_url)) as conn:
        conn.execute("DELETE FROM event_receipts")
        conn.execute("DELETE FROM dead_letters")
        conn.execute("DELETE FROM outbox")
        conn.execute("DELETE FROM audit_logs WHERE target_type = 'user'")
        conn.execute("DELETE FROM users WHERE email LIKE '%@backbone.test'")

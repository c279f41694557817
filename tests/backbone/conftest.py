"""Rows the reliability tests commit for real (workers read them), cleaned up after each."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import libpq_url


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

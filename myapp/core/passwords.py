"""Password hashing: argon2id at OWASP's parameters, always off the gevent hub."""

from __future__ import annotations

import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from myapp.core.concurrency import run_blocking
from myapp.core.config import current_settings

MIN_LENGTH = 8
MAX_LENGTH = 128

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def _threads() -> int:
    return current_settings().password_hash_threads


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return run_blocking(_hasher.hash, password, threads=_threads())


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def verify_password(password_hash: str, password: str) -> bool:
    """True when `password` matches; never raises for a wrong or malformed hash."""
    return run_blocking(_verify, password_hash, password, threads=_threads())


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("not-a-real-password-only-equalises-timing")


def _verify_against_dummy(password: str) -> bool:
    return _verify(_dummy_hash(), password)


def burn_verification(password: str) -> None:
    """Spend the time of one verification, for unknown accounts (no timing oracle)."""
    run_blocking(_verify_against_dummy, password, threads=_threads())

"""`flask users ...` and `flask crypto ...` commands."""

from __future__ import annotations

import contextlib
import uuid

import click
from flask.cli import with_appcontext
from redis.exceptions import RedisError
from sqlalchemy import select

from myapp.core.context import SYSTEM, bind_actor
from myapp.core.crypto import crypto, generate_key, key_fingerprint
from myapp.core.db import unit_of_work
from myapp.core.logging import get_logger
from myapp.core.redis import redis_client, redis_key
from myapp.extensions import db
from myapp.users import seed
from myapp.users.models import User

log = get_logger(__name__)
users_cli = click.Group("users", help="Manage user accounts.")
crypto_cli = click.Group("crypto", help="Field-encryption keys.")


@users_cli.command("create-admin")
@click.option("--email", required=True)
@click.option("--name", default="Administrator", show_default=True)
@click.password_option(help="Prompted for (twice) when omitted.")
@with_appcontext
def create_admin(email: str, name: str, password: str) -> None:
    """Create an administrator (idempotent: an existing e-mail is left unchanged)."""
    bind_actor(SYSTEM)
    seed.seed_roles()
    created = seed.ensure_user(email=email, password=password, name=name, roles=["admin"])
    click.echo("created" if created else "exists: left unchanged")


@crypto_cli.command("generate-key")
@click.option("--kid", required=True, help="Key id, e.g. 2026-11.")
def generate(kid: str) -> None:
    """Print a new `kid:base64key` entry; put it FIRST in ENCRYPTION_KEYS to make it active."""
    click.echo(generate_key(kid))


@crypto_cli.command("rotate")
@click.option("--batch-size", default=500, show_default=True)
@with_appcontext
def rotate(batch_size: int) -> None:
    """Re-encrypt every value sealed with an older key. Resumable: batches commit one by one."""
    bind_actor(SYSTEM)
    active_prefix = f"v1.{crypto().ring.active}."
    total = 0
    while True:
        with unit_of_work():
            batch = list(
                db.session.execute(
                    select(User)
                    .where(
                        User.phone_ciphertext.is_not(None),
                        User.phone_ciphertext.not_like(active_prefix + "%"),
                    )
                    .order_by(User.id)
                    .limit(batch_size)
                    .with_for_update(skip_locked=True)
                ).scalars()
            )
            for user in batch:
                User.phone.reencrypt(user)
        total += len(batch)
        log.info("crypto.rotate.batch", rows=len(batch), total=total)
        if len(batch) < batch_size:
            break
    click.echo(f"re-encrypted {total} values with key {crypto().ring.active}")


@crypto_cli.command("reindex")
@click.option("--batch-size", default=500, show_default=True)
@click.option("--max-batches", type=int, help="Stop after this many batches (run again to go on).")
@click.option(
    "--restart", is_flag=True, help="Start from the first row, not where the last run stopped."
)
@with_appcontext
def reindex(batch_size: int, max_batches: int | None, restart: bool) -> None:
    """Recompute every blind index with the current BLIND_INDEX_KEY.

    For a key change: deploy with the new key in BLIND_INDEX_KEY and the old one in
    BLIND_INDEX_KEY_PREVIOUS (lookups match both), run this until it reports done, then
    remove BLIND_INDEX_KEY_PREVIOUS. Batches commit one by one; the last id done is kept in
    Redis, so an interrupted run goes on where it stopped.
    """
    bind_actor(SYSTEM)
    progress = redis_key("crypto", "reindex", key_fingerprint(crypto().index_key))
    cursor = None if restart else _read_cursor(progress)
    total = changed = batches = 0
    while max_batches is None or batches < max_batches:
        with unit_of_work():
            statement = select(User).where(User.phone_ciphertext.is_not(None))
            if cursor is not None:
                statement = statement.where(User.id > cursor)
            batch = list(
                db.session.scalars(statement.order_by(User.id).limit(batch_size).with_for_update())
            )
            changed += sum(User.phone.reindex(user) for user in batch)
            last = batch[-1].id if batch else None
        batches += 1
        total += len(batch)
        if last is not None:
            cursor = last
            _write_cursor(progress, cursor)
        log.info("crypto.reindex.batch", rows=len(batch), total=total)
        if len(batch) < batch_size:
            click.echo(f"reindexed {total} rows ({changed} changed): done")
            return
    click.echo(f"reindexed {total} rows ({changed} changed): stopped, run again to go on")


def _read_cursor(key: str) -> uuid.UUID | None:
    try:
        stored = redis_client().get(key)
    except RedisError:
        return None  # no progress known: start over (recomputing is harmless)
    return uuid.UUID(stored) if stored else None


def _write_cursor(key: str, cursor: uuid.UUID) -> None:
    with contextlib.suppress(RedisError):
        redis_client().set(key, str(cursor), ex=7 * 86_400)

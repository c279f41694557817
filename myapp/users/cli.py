"""`flask users ...` and `flask crypto ...` commands."""

from __future__ import annotations

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from myapp.core.context import SYSTEM, bind_actor
from myapp.core.crypto import crypto, generate_key
from myapp.core.db import unit_of_work
from myapp.core.logging import get_logger
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

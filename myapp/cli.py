"""`flask` commands of the platform: `seed` runs every domain's seeder.

Domains register a seeder with `register_seeder`; each must be idempotent (running
`flask seed` twice changes nothing) and own its unit of work.
"""

from __future__ import annotations

from collections.abc import Callable

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from myapp.core.logging import get_logger

log = get_logger(__name__)
Seeder = Callable[[], None]


def register_seeder(app: Flask, seeder: Seeder) -> None:
    """Add an idempotent seeder run by `flask seed`, in registration order."""
    app.extensions.setdefault("seeders", []).append(seeder)


@click.command("seed")
@with_appcontext
def seed_command() -> None:
    """Create the reference data (roles, admin, flags; demo users in local/dev)."""
    seeders: list[Seeder] = current_app.extensions.get("seeders", [])
    for seeder in seeders:
        log.info("seed.run", seeder=f"{seeder.__module__}.{seeder.__qualname__}")
        seeder()
    log.info("seed.done", seeders=len(seeders))


def register_cli(app: Flask) -> None:
    """Attach the platform commands."""
    app.cli.add_command(seed_command)

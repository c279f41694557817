"""`flask flags list|set`."""

from __future__ import annotations

from dataclasses import replace

import click
from flask.cli import with_appcontext

from myapp.core.context import SYSTEM, bind_actor
from myapp.flags import service

flags_cli = click.Group("flags", help="Feature flags.")


@flags_cli.command("list")
@with_appcontext
def list_command() -> None:
    """Every flag: key, on/off, rules."""
    for flag in service.list_flags():
        state = "on " if flag.enabled else "off"
        click.echo(f"{flag.key:32} {state} {flag.rules}  {flag.description}")


@flags_cli.command("set")
@click.argument("key")
@click.option("--on/--off", "enabled", required=True, help="The master switch.")
@click.option("--percentage", type=click.IntRange(0, 100), help="Share of users (stable).")
@click.option("--roles", help="Comma-separated roles that always get it.")
@click.option("--description")
@with_appcontext
def set_command(
    key: str, enabled: bool, percentage: int | None, roles: str | None, description: str | None
) -> None:
    """Create or change a flag (audited; every process reloads it)."""
    bind_actor(SYSTEM)
    current = next((f for f in service.list_flags() if f.key == key), None)
    rules = current.targeting if current else service.FlagRules()
    if percentage is not None:
        rules = replace(rules, percentage=percentage)
    if roles is not None:
        rules = replace(rules, roles=tuple(r.strip() for r in roles.split(",") if r.strip()))
    flag = service.set_flag(key=key, enabled=enabled, description=description, rules=rules)
    click.echo(f"{flag.key}: {'on' if flag.enabled else 'off'} {flag.rules}")

"""`flask events ...`: reach users' event streams from the command line."""

from __future__ import annotations

import click
from flask.cli import AppGroup, with_appcontext

from myapp.events import service

events_cli = AppGroup("events", help="Users' live event streams (SSE).")


@events_cli.command("notify")
@click.argument("user_id")
@click.argument("message")
@with_appcontext
def notify_command(user_id: str, message: str) -> None:
    """Send MESSAGE as a `notification` event to USER_ID's streams."""
    event_id = service.notify(user_id=user_id, message=message)
    if event_id is None:
        raise click.ClickException("Redis did not answer; nothing was sent.")
    click.echo(f"sent: {event_id}")

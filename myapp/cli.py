"""`flask` commands of the platform: `seed`, `dlq` (dead letters), `outbox`.

Domains register a seeder with `register_seeder`; each must be idempotent (running
`flask seed` twice changes nothing) and own its unit of work.
"""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from kombu.exceptions import OperationalError as BrokerError

from myapp.core import deadletters, outbox
from myapp.core.config import current_settings
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


def _parse_before(value: str) -> datetime:
    """`30d`, `12h` (that long ago) or an ISO date/time (UTC when no zone is given)."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if value[:-1].isdigit() and value[-1] in units:
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use e.g. 30d, 12h or 2026-01-31T00:00:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@click.group("dlq")
def dlq_cli() -> None:
    """Dead letters: tasks that failed for good."""


@dlq_cli.command("list")
@click.option("--status", type=click.Choice(["dead", "replaying", "resolved"]))
@click.option("--limit", default=50, show_default=True)
@with_appcontext
def dlq_list(status: str | None, limit: int) -> None:
    """Newest failures first: id, status, task, attempts, last failure, error type."""
    for letter in deadletters.list_letters(status=status, limit=limit):
        click.echo(
            f"{letter.id}  {letter.status:<9}  {letter.task_name}  attempts={letter.attempts}  "
            f"last={letter.last_failed_at:%Y-%m-%dT%H:%M:%SZ}  {letter.error_type}"
        )


@dlq_cli.command("show")
@click.argument("letter_id", type=click.UUID)
@with_appcontext
def dlq_show(letter_id: uuid.UUID) -> None:
    """One letter as JSON, arguments masked."""
    letter = deadletters.get_letter(letter_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {letter_id}")
    fields = (
        "id",
        "task_id",
        "task_name",
        "status",
        "attempts",
        "replays",
        "request_id",
        "error_type",
        "error_message",
        "traceback_digest",
        "traceback_frames",
        "arguments_masked",
        "first_failed_at",
        "last_failed_at",
        "replayed_at",
        "replay_task_id",
        "resolved_at",
    )
    click.echo(json.dumps({name: getattr(letter, name) for name in fields}, default=str, indent=2))


@dlq_cli.command("replay")
@click.argument("letter_id", type=click.UUID, required=False)
@click.option("--all", "replay_all", is_flag=True, help="Every letter still `dead`.")
@with_appcontext
def dlq_replay(letter_id: uuid.UUID | None, replay_all: bool) -> None:
    """Send a dead task again with its original arguments (one ID, or --all)."""
    if bool(letter_id) == replay_all:
        raise click.UsageError("give one ID or --all")
    letters = (
        deadletters.list_letters(status=deadletters.DEAD, limit=10_000)
        if replay_all
        else [deadletters.get_letter(letter_id)]
    )
    if letters == [None]:
        raise click.ClickException(f"no dead letter {letter_id}")
    for letter in letters:
        try:
            task_id = deadletters.replay(letter)
        except BrokerError as error:
            raise click.ClickException(f"broker unavailable ({type(error).__name__})") from None
        click.echo(f"{letter.id} replayed as task {task_id}")


@dlq_cli.command("purge")
@click.option("--before", "before", required=True, help="30d, 12h or an ISO date/time.")
@with_appcontext
def dlq_purge(before: str) -> None:
    """Delete letters whose last failure is older than --before."""
    click.echo(f"purged {deadletters.purge(before=_parse_before(before))} dead letters")


@click.group("outbox")
def outbox_cli() -> None:
    """The transactional outbox."""


@outbox_cli.command("status")
@with_appcontext
def outbox_status() -> None:
    """Events waiting to be published and the age of the oldest."""
    waiting = outbox.backlog()
    click.echo(f"backlog={waiting.pending} oldest_age_s={waiting.oldest_age_seconds:.1f}")


@outbox_cli.command("relay")
@with_appcontext
def outbox_relay() -> None:
    """Run a relay in the foreground until SIGTERM/SIGINT (workers run one already)."""
    settings = current_settings()
    relay = outbox.Relay(
        current_app._get_current_object(),  # noqa: SLF001 - the app, not its proxy
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: relay.stop())
    relay.run()


@outbox_cli.command("resend")
@click.option("--since", "since", required=True, help="10m, 2h or an ISO date/time.")
@with_appcontext
def outbox_resend(since: str) -> None:
    """Publish again the events published since --since (after a broker lost messages)."""
    click.echo(f"{outbox.resend_since(_parse_before(since))} events will be published again")


@outbox_cli.command("purge")
@click.option("--before", "before", default="7d", show_default=True, help="30d, 12h or ISO.")
@with_appcontext
def outbox_purge(before: str) -> None:
    """Delete events published before --before."""
    click.echo(f"purged {outbox.purge_sent(before=_parse_before(before))} sent events")


def register_cli(app: Flask) -> None:
    """Attach the platform commands."""
    app.cli.add_command(seed_command)
    app.cli.add_command(dlq_cli)
    app.cli.add_command(outbox_cli)

"""Make sure PostgreSQL and Redis answer, then run a command (used by ``make dev``/``make test``).

The command-line interface (``run`` and ``check``) of ``python -m myapp.devservices``; the
first line above is its ``--help`` description.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from .base import DEFAULT_DATABASE_URL, ManagedServer, ServiceError, log, port_answers
from .postgres import create_database
from .process import run_child, signals_ignored
from .services import ensure_services, service_endpoints, stop_all


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: ensure the services, optionally create the database, run the command."""
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ServiceError("no command given; usage: run [options] -- CMD ARGS...")
    started: list[ManagedServer] = []
    # Until CMD runs, SIGTERM interrupts us like Ctrl-C, so that the cleanup below still runs.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        ensure_services(args.state_dir.resolve(), started)
        if args.create_db:
            create_database(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
        return run_child(command)
    finally:
        with signals_ignored():  # an impatient second Ctrl-C must not leave servers behind
            stop_all(started)
        signal.signal(signal.SIGTERM, previous_sigterm)


def cmd_check(_args: argparse.Namespace) -> int:
    """``check``: log whether each service answers; 0 if all do, else 1."""
    all_answer = True
    for endpoint, _factory in service_endpoints():
        answers = port_answers(endpoint.host, endpoint.port)
        all_answer = all_answer and answers
        log.info("%s: %s", endpoint, "answers" if answers else "does NOT answer")
    return 0 if all_answer else 1


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m myapp.devservices", description=__doc__.split("\n", 1)[0]
    )
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser("run", help="ensure PostgreSQL/Redis answer, then run CMD")
    run.add_argument("--create-db", action="store_true", help="create the DATABASE_URL database")
    run.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".devdata"),
        help="where started servers keep their data (default: .devdata)",
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    run.set_defaults(func=cmd_run)
    check = commands.add_parser("check", help="report whether PostgreSQL/Redis answer")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="devservices: %(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ServiceError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130

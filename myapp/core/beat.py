"""The beat scheduler: RedBeat, plus an identity on every tick it sends.

RedBeat keeps the schedule in Redis and holds a Redis lock, so one beat sends while a
second one (a rolling update) waits for the lock. The lock alone is not a proof: a beat
that stalls past the lock's timeout while the other takes over may still send. So each
message carries a tick id, `<job>:<previous run time>` (both beats read the same
previous run time from Redis), and `myapp.core.tasks.BaseTask` runs a tick id once
(`SET NX`). Run it with `celery beat -S myapp.core.beat:Scheduler`.
"""

from __future__ import annotations

from typing import Any

from redbeat import RedBeatScheduler

from myapp.core.tasks import TICK_HEADER


def tick_id(entry: Any) -> str:
    """The same string for one due run of `entry`, whichever beat computes it."""
    previous = entry.last_run_at.isoformat() if entry.last_run_at else "first"
    return f"{entry.name}:{previous}"


class Scheduler(RedBeatScheduler):
    """RedBeat that stamps every message with the tick it runs."""

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any):
        """Send `entry` with a tick id in its headers (the stored definition is unchanged)."""
        stored = entry.options
        headers = {**stored.get("headers", {}), TICK_HEADER: tick_id(entry)}
        entry.options = {**stored, "headers": headers}
        try:
            return super().apply_async(entry, producer, advance, **kwargs)
        finally:
            entry.options = stored

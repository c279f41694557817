"""The caller cache: what the caller read found about a login, reused for a moment.

`auth.service.resolve_caller` reads through it; the factory gives each app one
(`init_recent_callers`, sized by `AUTH_CALLER_CACHE_SECONDS`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask import Flask, current_app


class RecentCallers:
    """What the caller read found, by (user id, login session id), for a few seconds.

    Every authenticated request reads its user, roles and login session; a client sends
    several requests a second, and each read is a database round trip the request waits
    for. An answer is reused for `seconds` (`AUTH_CALLER_CACHE_SECONDS`, 0: never) while
    the user's generation is unchanged: the guards step reads it in its Redis round trip,
    and every change to a user or their logins sets a new one once it commits
    (`core.guards.outdate_caller`), so every process reads again at once. Only a change
    made past the services (SQL by hand) waits out `seconds`. Without a generation (Redis
    down, a socket connect) every read goes to the database.
    """

    MAX_ENTRIES = 10_000  # then it starts over empty (bounded memory, never wrong)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entries: dict[tuple[uuid.UUID, uuid.UUID], tuple[float, str, Any]] = {}

    def read(
        self, user_id: uuid.UUID, session_id: uuid.UUID, generation: str | None, load: Any
    ) -> Any:
        """`load()`'s answer for this login: kept, when read at this generation in the last
        `seconds`; else fresh (and kept)."""
        if not self.seconds or generation is None:
            return load()
        key, now = (user_id, session_id), time.monotonic()
        kept = self._entries.get(key)
        if kept is not None and kept[0] > now and kept[1] == generation:
            return kept[2]
        found = load()
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (now + self.seconds, generation, found)
        return found


_RECENT_CALLERS = "myapp.recent_callers"


def init_recent_callers(app: Flask, seconds: float) -> RecentCallers:
    """Give `app` its cache of caller reads."""
    cache = app.extensions[_RECENT_CALLERS] = RecentCallers(seconds)
    return cache


def recent_callers() -> RecentCallers:
    """The current app's cache of caller reads."""
    return current_app.extensions[_RECENT_CALLERS]

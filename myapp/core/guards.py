"""The request guards that need Redis, in one round trip: API budget and token denylist.

One command per request (a small Lua script, so it is one round trip and atomic) counts
the fixed-window budget of the caller (`RATELIMIT_DEFAULT`, keyed by user id when a
verified token came, else by client address) and, when a token came, looks its id up in
the denylist (tokens ended by logout) and reads the user's generation: a random value set
anew whenever the user or their logins change, which tells the caller step whether what
this process cached about them still holds. Health, metrics and CORS preflights are
exempt from the budget.

Redis down: the request goes on. The budget fails open (one warning line, and
`ratelimit_storage_errors_total` counts it); the denylist and the generation are then
unknown, so the login session check in PostgreSQL (same request, next step, never from
the cache) still refuses logged-out tokens.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis.exceptions
from flask import Response, g, request
from limits import parse

from myapp.core.config import current_settings
from myapp.core.context import OPERATIONAL_PREFIXES, current_credentials
from myapp.core.db import after_commit
from myapp.core.errors import AppError
from myapp.core.logging import get_logger
from myapp.core.ratelimit import count_storage_error
from myapp.core.redis import redis_client, redis_key

log = get_logger(__name__)

#: KEYS: budget counter, denylist entry, the caller's generation. ARGV: window seconds (0:
#: no budget), 1/0: check the denylist and read the generation. Returns {requests counted
#: in this window (-1: none), token denied 1/0, generation ("" when none was set)}.
GUARDS_SCRIPT = """
local used, denied, generation = -1, 0, ""
if ARGV[1] ~= "0" then
  used = redis.call("INCR", KEYS[1])
  if used == 1 then redis.call("EXPIRE", KEYS[1], ARGV[1] + 1) end
end
if ARGV[2] == "1" then
  denied = redis.call("EXISTS", KEYS[2])
  generation = redis.call("GET", KEYS[3]) or ""
end
return {used, denied, generation}
"""
#: How long a user's generation is kept after its last change: far longer than anything
#: read before that change can still be cached (`AUTH_CALLER_CACHE_SECONDS`, at most 10 s).
GENERATION_TTL_SECONDS = 3600
GUARDS_SHA = hashlib.sha1(GUARDS_SCRIPT.encode()).hexdigest()  # noqa: S324 - Redis' script id


@dataclass(frozen=True, slots=True)
class Budget:
    """`amount` requests per `seconds`-long window."""

    amount: int
    seconds: int


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """Where a caller stands in the current window (for the `X-RateLimit-*` headers)."""

    budget: Budget
    used: int
    resets_at: int  # epoch seconds

    @property
    def exceeded(self) -> bool:
        """More requests than the budget allows in this window."""
        return self.used > self.budget.amount

    def headers(self) -> dict[str, str]:
        """`X-RateLimit-*` (and `Retry-After` once exceeded)."""
        values = {
            "X-RateLimit-Limit": str(self.budget.amount),
            "X-RateLimit-Remaining": str(max(self.budget.amount - self.used, 0)),
            "X-RateLimit-Reset": str(self.resets_at),
        }
        if self.exceeded:
            values["Retry-After"] = str(max(math.ceil(self.resets_at - time.time()), 1))
        return values


@lru_cache(maxsize=64)
def parse_budget(text: str) -> Budget:
    """`300/minute`, `10 per 1 second`, ... (the notation of the `limits` library)."""
    item = parse(text)
    return Budget(amount=item.amount, seconds=item.get_expiry())


def denylist_key(token_id: str) -> str:
    """Where a revoked access token's id is kept until the token expires."""
    return redis_key("denylist", "jti", token_id)


def deny_token(token_id: str, expires_at: int) -> None:
    """Refuse this access token until it expires anyway (raises when Redis is down)."""
    ttl = max(int(expires_at - time.time()), 1)
    redis_client().set(denylist_key(token_id), "1", ex=ttl)


def generation_key(user_id: str) -> str:
    """Where the generation of what is known about a user and their logins is kept."""
    return redis_key("caller", "generation", user_id)


def bump_generation(user_id: str) -> None:
    """Mark what any process read about this user and their logins as outdated: the next
    request of theirs reads it again (`caller_generation()`). Redis down: logged, and
    what was read goes out of date with its cache time anyway."""
    try:
        redis_client().set(generation_key(user_id), secrets.token_hex(8), ex=GENERATION_TTL_SECONDS)
    except redis.exceptions.RedisError:
        log.warning("caller.generation_unavailable")


def outdate_caller(user_id: Any) -> None:
    """Once the current unit of work commits, give the user a new generation (one write
    per user and unit of work, however many of its changes concern them)."""
    user_id = str(user_id)
    after_commit(lambda: bump_generation(user_id), key=("caller.generation", user_id))


def caller_generation() -> str | None:
    """The caller's generation, read by the guards step in its round trip; None when it
    could not be read (Redis down, or no guards step ran: a socket connect)."""
    return g.get("caller_generation")


def is_denied(token_id: str) -> bool:
    """Whether this access token was revoked (logout). Redis down: not known, so False
    (the login session check in PostgreSQL still refuses a logged-out token)."""
    try:
        return bool(redis_client().exists(denylist_key(token_id)))
    except redis.exceptions.RedisError:
        log.warning("denylist.unavailable")
        return False


def _budget_scope() -> str | None:
    """`user:<id>` or `ip:<address>`, or None when this request spends no budget."""
    settings = current_settings()
    if not settings.ratelimit_enabled or request.method == "OPTIONS":
        return None
    if request.path.startswith(OPERATIONAL_PREFIXES):
        return None
    credentials = current_credentials()
    return f"user:{credentials.user_id}" if credentials else f"ip:{request.remote_addr}"


def _run_guards(keys: tuple[str, str, str], args: tuple[int, int]) -> list[Any]:
    """The script by its id; loaded first when this Redis does not know it yet."""
    client = redis_client()
    try:
        return client.evalsha(GUARDS_SHA, len(keys), *keys, *args)
    except redis.exceptions.NoScriptError:
        client.script_load(GUARDS_SCRIPT)  # a new or restarted Redis: once per server
        return client.evalsha(GUARDS_SHA, len(keys), *keys, *args)


def spend_budget(scope: tuple[str, ...], budget: Budget) -> BudgetUse:
    """Count one use of `budget` by `scope` in the current window, with the same script
    as the request guards (one round trip). Raises when Redis is down."""
    window = int(time.time()) // budget.seconds
    counter = redis_key("ratelimit", *scope, str(window))
    used, _, _ = _run_guards((counter, "", ""), (budget.seconds, 0))
    return BudgetUse(budget=budget, used=int(used), resets_at=(window + 1) * budget.seconds)


def check_guards() -> None:
    """Step: count the budget and look the token up in the denylist, in one round trip."""
    scope, credentials = _budget_scope(), current_credentials()
    if scope is None and credentials is None:
        return
    budget = parse_budget(current_settings().ratelimit_default)
    window = int(time.time()) // budget.seconds
    counter = redis_key("ratelimit", "api", scope, str(window)) if scope else ""
    denylisted = denylist_key(credentials.token_id) if credentials else ""
    generation = generation_key(credentials.user_id) if credentials else ""
    args = (budget.seconds if scope else 0, 1 if credentials else 0)
    try:
        used, denied, known = _run_guards((counter, denylisted, generation), args)
    except redis.exceptions.RedisError:
        count_storage_error()
        log.warning("ratelimit.storage_unavailable", allowed=True)
        return
    if denied:
        g.credentials_revoked = True
    if credentials:
        g.caller_generation = known
    if scope is not None:
        use = BudgetUse(budget=budget, used=int(used), resets_at=(window + 1) * budget.seconds)
        g.budget_use = use
        if use.exceeded:
            raise AppError("RATE_LIMITED", headers=use.headers())


def add_budget_headers(response: Response) -> Response:
    """Finisher: tell the caller where they stand (unless a route budget already did)."""
    use: BudgetUse | None = g.get("budget_use")
    if use is not None and "X-RateLimit-Limit" not in response.headers:
        response.headers.update(use.headers())
    return response

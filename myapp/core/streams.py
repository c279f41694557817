"""Per-user event streams in Redis Streams, and the per-process hub that reads them.

Anything may `publish(user_id, type, data)`: one `XADD` to the user's stream (capped at
`SSE_STREAM_MAXLEN` entries, expiring `SSE_STREAM_TTL_SECONDS` after the last event). The
stream id Redis assigns is the event's id, so a client that reconnects with the last id it
saw gets exactly what came after it, as long as the stream still holds it.

Readers (the SSE route) do not each block on Redis: one hub per process runs a single
`XREAD BLOCK` over the streams of every user connected to that process and hands each entry
to that user's subscriptions. A subscription first reads its own backlog (`XRANGE` after
its last id), and every subscription drops ids it has already delivered, so the backlog and
the live feed join without a gap or a duplicate. A new subscription wakes the hub through a
per-process control stream, so it is watched at once rather than after the block timeout.

Publishing is fire-and-forget for the publisher: with Redis down the event is lost (a log
line and `sse_publish_errors_total`), the job row stays the truth, and the hub retries with
backoff until Redis answers again.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions
from flask import Flask, current_app
from redis import ConnectionPool, Redis

from myapp.core.logging import get_logger
from myapp.core.metrics import app_counter, app_gauge
from myapp.settings import Settings

log = get_logger(__name__)
_EXTENSION = "myapp.streams"
_BLOCK_MS = 5000
_CLOSED = object()
#: A control entry, never sent to clients: the logins listed (`sessionIds`) ended, so
#: their open streams end too (the client then finds its token refused).
SESSION_ENDED = "session.ended"
_HUBS: weakref.WeakSet[StreamHub] = weakref.WeakSet()  # this process's, for shutdown


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event of a user's stream."""

    id: str
    type: str
    data: dict[str, Any]


def stream_id_key(stream_id: str) -> tuple[int, int]:
    """`1700000000000-3` -> (1700000000000, 3), for ordering ids."""
    millis, _, sequence = stream_id.partition("-")
    return int(millis), int(sequence or 0)


def is_stream_id(value: str) -> bool:
    """A well-formed stream id (what `Last-Event-ID` must be)."""
    millis, dash, sequence = value.partition("-")
    return bool(dash) and millis.isdigit() and sequence.isdigit() and len(value) <= 41


def _decode(entry_id: str, fields: dict[str, str]) -> StreamEvent | None:
    try:
        return StreamEvent(id=entry_id, type=fields["type"], data=json.loads(fields["data"]))
    except (KeyError, ValueError):
        log.warning("sse.bad_entry", entry_id=entry_id)
        return None


@dataclass(eq=False)  # compared and hashed by identity: a set holds them
class Subscription:
    """One client's feed: events after `last_id`, in order, each once."""

    hub: StreamHub
    key: str
    last_id: str
    events: queue.Queue = field(default_factory=queue.Queue)

    def deliver(self, event: StreamEvent | object) -> None:
        """Queue an event (the hub and the backlog call this)."""
        self.events.put(event)

    def next(self, timeout: float) -> StreamEvent | None:
        """The next new event, or None after `timeout` s; `ShutdownError` once the hub closed."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                item = self.events.get(timeout=remaining)
            except queue.Empty:
                return None
            if item is _CLOSED:
                raise ShutdownError
            if stream_id_key(item.id) > stream_id_key(self.last_id):
                self.last_id = item.id
                return item

    def close(self) -> None:
        """Stop receiving (the client went away)."""
        self.hub.unsubscribe(self)


class ShutdownError(Exception):
    """The process is shutting down: end the stream so the client reconnects elsewhere."""


@dataclass(frozen=True, slots=True)
class _StreamMetrics:
    published: Any
    errors: Any
    open_streams: Any


class StreamHub:
    """The process's one reader of every connected user's stream."""

    def __init__(
        self, client: Redis, prefix: str, settings: Settings, metrics: _StreamMetrics
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.prefix = prefix
        self.maxlen = settings.sse_stream_maxlen
        self.ttl = settings.sse_stream_ttl_seconds
        self.control = f"{prefix}sse:hub:{uuid.uuid4().hex}"
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._cursors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._reader: Redis | None = None

    def key(self, user_id: str) -> str:
        """The Redis key of a user's stream."""
        return f"{self.prefix}sse:user:{user_id}"

    def publish(self, user_id: str, event_type: str, data: dict[str, Any]) -> str:
        """Append an event to the user's stream; its id. Raises when Redis is down."""
        key = self.key(user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(
            key,
            {"type": event_type, "data": json.dumps(data, default=str)},
            maxlen=self.maxlen,
            approximate=True,
        )
        pipe.expire(key, self.ttl)
        entry_id, _ = pipe.execute()
        return entry_id

    def subscribe(self, user_id: str, last_id: str | None) -> Subscription:
        """A feed of the user's events after `last_id` (None: only new ones)."""
        key = self.key(user_id)
        if last_id is None:
            newest = self.client.xrevrange(key, count=1)
            last_id = newest[0][0] if newest else "0-0"
            backlog: list = []
        else:
            backlog = self.client.xrange(key, min=f"({last_id}", count=self.maxlen * 2)
        subscription = Subscription(self, key, last_id)
        for entry_id, fields in backlog:
            event = _decode(entry_id, fields)
            if event is not None:
                subscription.deliver(event)
        newest_seen = backlog[-1][0] if backlog else last_id
        with self._lock:
            if self._closed:
                subscription.deliver(_CLOSED)
                return subscription
            watchers = self._subscriptions.setdefault(key, set())
            watchers.add(subscription)
            cursor = self._cursors.get(key)
            if cursor is None or stream_id_key(newest_seen) < stream_id_key(cursor):
                self._cursors[key] = newest_seen  # the hub re-reads from here: no gap
            self._start()
        self._wake()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a subscription; its stream is no longer read once nobody watches it."""
        with self._lock:
            watchers = self._subscriptions.get(subscription.key)
            if watchers is None:
                return
            watchers.discard(subscription)
            if not watchers:
                del self._subscriptions[subscription.key]
                self._cursors.pop(subscription.key, None)

    @property
    def watched(self) -> int:
        """Subscriptions currently open."""
        with self._lock:
            return sum(len(watchers) for watchers in self._subscriptions.values())

    def close(self) -> None:
        """End every subscription (process shutdown): their streams end cleanly."""
        with self._lock:
            self._closed = True
            everyone = [s for watchers in self._subscriptions.values() for s in watchers]
            self._subscriptions.clear()
            self._cursors.clear()
        for subscription in everyone:
            subscription.deliver(_CLOSED)
        self._wake()

    def _wake(self) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.xadd(self.control, {"w": "1"}, maxlen=10, approximate=False)
            pipe.expire(self.control, 3600)
            pipe.execute()
        except redis.exceptions.RedisError:
            pass  # the hub's next block timeout picks the change up

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="sse-hub", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        control_cursor = "$"
        failures = 0
        while True:
            with self._lock:
                if self._closed or not self._subscriptions:
                    self._thread = None
                    return
                streams = dict(self._cursors)
            streams[self.control] = control_cursor
            try:
                answer = self._reader_client().xread(streams, block=_BLOCK_MS)
            except redis.exceptions.RedisError as error:
                failures += 1
                log.warning("sse.hub_read_failed", error_type=type(error).__name__)
                time.sleep(min(0.1 * 2**failures, 5.0))
                continue
            failures = 0
            for key, entries in answer or ():
                if key == self.control:
                    control_cursor = entries[-1][0]
                    continue
                self._dispatch(key, entries, streams.get(key))

    def _reader_client(self) -> Redis:
        """A connection of its own: it blocks for seconds at a time."""
        if self._reader is None:
            pool = self.client.connection_pool
            options = {**pool.connection_kwargs, "socket_timeout": _BLOCK_MS / 1000 + 5}
            self._reader = Redis(
                connection_pool=ConnectionPool(
                    connection_class=pool.connection_class, max_connections=1, **options
                )
            )
        return self._reader

    def _dispatch(self, key: str, entries: list, read_from: str | None) -> None:
        events = [e for e in (_decode(i, f) for i, f in entries) if e is not None]
        with self._lock:
            watchers = list(self._subscriptions.get(key, ()))
            # A subscription that joined meanwhile may have moved the cursor back (its
            # backlog ended earlier): keep that, so the next read covers its gap.
            if self._cursors.get(key) == read_from:
                self._cursors[key] = entries[-1][0]
        for subscription in watchers:
            for event in events:
                subscription.deliver(event)


def init_streams(app: Flask, client: Redis, settings: Settings) -> StreamHub:
    """Give `app` its hub (started on the first subscription) and the stream metrics."""
    metrics = _StreamMetrics(
        published=app_counter(app, "sse_events_published_total", "Events published", ("type",)),
        errors=app_counter(app, "sse_publish_errors_total", "Events lost: Redis down"),
        open_streams=app_gauge(
            app, "sse_open_streams", "Event streams open", multiprocess_mode="livesum"
        ),
    )
    hub = StreamHub(client, settings.redis_prefix, settings, metrics)
    _HUBS.add(hub)
    app.extensions[_EXTENSION] = hub
    return hub


def shutdown_streams() -> None:
    """End every event stream of this process (the web worker is stopping): each ends
    cleanly, and `EventSource` reconnects, to another process, with `Last-Event-ID`."""
    for hub in list(_HUBS):
        hub.close()


def stream_hub() -> StreamHub:
    """The current app's hub."""
    return current_app.extensions[_EXTENSION]


def publish(user_id: str, event_type: str, data: dict[str, Any]) -> str | None:
    """Send an event to a user's stream; None (logged, counted) when Redis is down."""
    hub = stream_hub()
    try:
        entry_id = hub.publish(user_id, event_type, data)
    except redis.exceptions.RedisError as error:
        hub.metrics.errors.inc()
        log.warning("sse.publish_failed", event_type=event_type, error_type=type(error).__name__)
        return None
    hub.metrics.published.labels(event_type).inc()
    return entry_id


def format_event(event: StreamEvent) -> bytes:
    """One SSE message: `id`, `event`, `data` lines and a blank line."""
    data = json.dumps(event.data, separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n".encode()


def sse_body(
    subscription: Subscription,
    *,
    session_id: str,
    heartbeat: float,
    retry_ms: int,
    ends_at: float,
) -> Iterator[bytes]:
    """The bytes of an SSE response: events as they come, a comment every `heartbeat` s,
    until `ends_at` (epoch seconds), the login `session_id` ends, the client leaves, or the
    process shuts down.

    Call it inside the request; the bytes are produced after the request context is gone
    (a stream holds no database connection and no admission slot).
    """
    return _EventStreamBody(
        subscription,
        subscription.hub.metrics.open_streams,
        session_id=session_id,
        heartbeat=heartbeat,
        retry_ms=retry_ms,
        ends_at=ends_at,
    )


class _EventStreamBody:
    """The response iterable; `close()` (the server calls it, even on a stream it never
    started) releases the subscription exactly once."""

    def __init__(  # noqa: PLR0913 - one stream's settings
        self,
        subscription: Subscription,
        gauge: Any,
        *,
        session_id: str,
        heartbeat: float,
        retry_ms: int,
        ends_at: float,
    ) -> None:
        self._subscription, self._gauge, self._session_id = subscription, gauge, session_id
        self._heartbeat, self._retry_ms, self._ends_at = heartbeat, retry_ms, ends_at
        self._released = False
        gauge.inc()
        self._chunks = self._produce()

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def _produce(self) -> Iterator[bytes]:
        try:
            yield f"retry: {self._retry_ms}\n: connected\n\n".encode()
            while True:
                remaining = self._ends_at - time.time()
                if remaining <= 0:
                    return  # the credentials ran out: the client reconnects with fresh ones
                try:
                    event = self._subscription.next(min(self._heartbeat, remaining))
                except ShutdownError:
                    return
                if event is not None and event.type == SESSION_ENDED:
                    if self._session_id in event.data.get("sessionIds", ()):
                        return  # logged out or revoked: the client must authenticate again
                    continue
                yield b": heartbeat\n\n" if event is None else format_event(event)
        finally:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._gauge.dec()
            self._subscription.close()

    def close(self) -> None:
        """The client left or the answer ended."""
        self._chunks.close()
        self._release()

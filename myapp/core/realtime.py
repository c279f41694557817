"""Socket.IO in every process: server options, a message queue that recovers, this process's
connections, the watch that ends sockets of ended logins, and shutdown.

- **Message queue.** Every process (web, realtime, worker) talks to the others through one
  Redis pub/sub channel, so any of them can emit to any client. Pub/sub is fire-and-forget:
  an emit during a Redis outage is lost (clients resync from history). The listener of
  python-socketio's Redis manager blocks on a socket without a timeout (a half-open
  connection is never noticed) and backs off up to 60 s between reconnects; ours polls with
  health checks and retries within 2 s, so delivery resumes seconds after Redis is back.
- **Connections.** The process keeps who is behind each of its sockets (user, login), and
  puts every socket in a per-process room, so shutdown reaches exactly its own clients with
  one emit.
- **Login watch.** Every `REALTIME_LOGIN_CHECK_SECONDS` the process asks, in one call, which
  of its sockets' logins are still open; sockets of ended logins (logout, revoked session,
  password or role change, a disabled user) are disconnected. A token is checked once, at
  connect; the login behind it is checked for as long as the socket lives.
- **Shutdown.** `shutdown_realtime()` (gunicorn's drain calls it) emits `server:shutdown` to
  the process's clients, gives them `REALTIME_SHUTDOWN_GRACE_SECONDS` to reconnect
  elsewhere, then disconnects whoever is left.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import socketio
from flask import Flask, current_app
from flask_socketio import SocketIO
from gevent import monkey

from myapp.core.logging import get_logger
from myapp.core.metrics import app_counter, app_gauge
from myapp.settings import Settings

log = get_logger(__name__)
_EXTENSION = "myapp.realtime"
_RETRY_FIRST, _RETRY_MAX, _POLL_SECONDS = 0.2, 2.0, 1.0
SHUTDOWN_EVENT = "server:shutdown"
_DEPARTURES = 32
_PROCESSES: weakref.WeakSet[Realtime] = weakref.WeakSet()  # this process's, for shutdown

#: Given the login (session) ids of connected sockets, the ones still open.
LoginCheck = Callable[[set[str]], set[str]]


class QueueManager(socketio.RedisManager):
    """python-socketio's Redis manager with a listener that notices a dead connection and
    comes back within `_RETRY_MAX` seconds of Redis answering again."""

    def _redis_listen_with_retries(self) -> Iterator[dict[str, Any]]:
        delay, failing = _RETRY_FIRST, False
        while True:
            try:
                self._redis_connect()
                self.pubsub.subscribe(self.channel)
                if failing:
                    log.info("realtime.queue_listening")
                delay, failing = _RETRY_FIRST, False
                while True:  # short polls: health-check pings run between them
                    message = self.pubsub.get_message(timeout=_POLL_SECONDS)
                    if message is not None:
                        yield message
            except Exception as error:  # noqa: BLE001 - any failure: reconnect
                if not failing:
                    log.warning("realtime.queue_unavailable", error_type=type(error).__name__)
                failing = True
                self._close_quietly()
                time.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    def _close_quietly(self) -> None:
        try:
            if self.pubsub is not None:
                self.pubsub.close()
        except Exception:  # noqa: BLE001, S110 - it is being replaced anyway
            pass
        self.connected = False


@dataclass(frozen=True, slots=True)
class Connection:
    """Who is behind one socket."""

    sid: str
    namespace: str
    user_id: str
    session_id: str  # the login the token belongs to
    data: Any = None  # what the namespace keeps about the caller (its actor)


@dataclass(frozen=True, slots=True)
class _RealtimeMetrics:
    connected: Any
    events_in: Any
    events_out: Any
    disconnects: Any


class Realtime:
    """This process's sockets, the login watch and shutdown."""

    def __init__(
        self, app: Flask, server: SocketIO, settings: Settings, metrics: _RealtimeMetrics
    ) -> None:
        self.app = app
        self.socketio = server
        self.metrics = metrics
        self.node_room = f"node:{uuid.uuid4().hex}"
        self.check_every = settings.realtime_login_check_seconds
        self.grace = settings.realtime_shutdown_grace_seconds
        self.login_check: LoginCheck | None = None
        self._connections: dict[str, Connection] = {}
        self._lock = threading.Lock()
        self._watching = False
        self.closing = False
        #: Sockets leaving at once do their cleanup a few at a time.
        self.departures = threading.BoundedSemaphore(_DEPARTURES)

    # -- connections --------------------------------------------------------------------
    def add(self, connection: Connection) -> None:
        """A socket was accepted: remember it and put it in this process's room."""
        with self._lock:
            self._connections[connection.sid] = connection
            start = not self._watching and self.login_check is not None
            self._watching = self._watching or start
        self.socketio.server.enter_room(connection.sid, self.node_room, connection.namespace)
        self.metrics.connected.inc()
        if start:
            self.socketio.start_background_task(self._watch_logins)

    def remove(self, sid: str) -> Connection | None:
        """A socket went away; what was known about it (None if it never got accepted)."""
        with self._lock:
            connection = self._connections.pop(sid, None)
        if connection is not None:
            self.metrics.connected.dec()
        return connection

    def get(self, sid: str) -> Connection | None:
        """The accepted socket `sid`."""
        return self._connections.get(sid)

    @property
    def count(self) -> int:
        """Sockets connected to this process."""
        return len(self._connections)

    def disconnect(self, connection: Connection, reason: str) -> None:
        """Close one of this process's sockets (its disconnect handler runs)."""
        self.metrics.disconnects.labels(reason).inc()
        self.socketio.server.disconnect(
            connection.sid, namespace=connection.namespace, ignore_queue=True
        )

    def emit(self, event: str, data: Any, *, to: str, namespace: str) -> None:
        """Emit through the message queue (reaches every process), counted by name."""
        self.socketio.emit(event, data, to=to, namespace=namespace)
        self.metrics.events_out.labels(event).inc()

    # -- login watch --------------------------------------------------------------------
    def _watch_logins(self) -> None:
        while not self.closing:
            time.sleep(self.check_every)
            try:
                self.check_logins()
            except Exception as error:  # noqa: BLE001 - keep watching; the next round retries
                log.warning("realtime.login_check_failed", error_type=type(error).__name__)

    def check_logins(self) -> int:
        """Disconnect sockets whose login ended; how many were disconnected."""
        with self._lock:
            connections = list(self._connections.values())
        if not connections or self.login_check is None:
            return 0
        with self.app.app_context():
            still_open = self.login_check({c.session_id for c in connections})
        ended = [c for c in connections if c.session_id not in still_open]
        for connection in ended:
            log.info("realtime.login_ended", user_id=connection.user_id)
            self.disconnect(connection, "login_ended")
        return len(ended)

    # -- shutdown -----------------------------------------------------------------------
    def shutdown(self, grace: float | None = None) -> None:
        """Tell this process's clients to reconnect elsewhere, wait, disconnect the rest."""
        self.closing = True
        grace = self.grace if grace is None else grace
        with self._lock:
            namespaces = {c.namespace for c in self._connections.values()}
        for namespace in namespaces:
            # Local delivery only: the room exists in this process alone.
            self.socketio.server.emit(
                SHUTDOWN_EVENT,
                {"reconnectInMs": int(grace * 1000)},
                to=self.node_room,
                namespace=namespace,
                ignore_queue=True,
            )
            self.metrics.events_out.labels(SHUTDOWN_EVENT).inc()
        deadline = time.monotonic() + grace
        while self.count and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            left = list(self._connections.values())
        for connection in left:
            self.disconnect(connection, "shutdown")


def _origin_allowed(origin: str, environ: dict[str, Any], allowed: frozenset[str]) -> bool:
    """`CORS_ORIGINS`, or the server's own origin (the page came from this very host; a
    browser sets `Host` itself, so another site cannot claim it). Engine.IO asks only
    when an `Origin` header came: a client without one is not a browser."""
    if origin in allowed:
        return True
    host = environ.get("HTTP_HOST")
    return bool(host) and urlsplit(origin).netloc == host


def socketio_options(settings: Settings) -> dict[str, Any]:
    """`SocketIO.init_app` options: gevent (when patched), the recovering queue, the origin
    allowlist, and a packet size limit."""
    allowed = frozenset(settings.cors_origins)
    queue = QueueManager(
        settings.redis_url,
        channel=f"{settings.redis_prefix}socketio",
        redis_options={
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_connect_timeout,
            "socket_keepalive": True,
            "health_check_interval": max(settings.redis_health_check_interval // 3, 5),
        },
    )
    return {
        "client_manager": queue,
        "async_mode": "gevent" if monkey.is_module_patched("socket") else "threading",
        "cors_allowed_origins": lambda origin, environ: _origin_allowed(origin, environ, allowed),
        "max_http_buffer_size": settings.realtime_max_message_bytes,
        "manage_session": False,  # sockets carry a bearer token, not a cookie session
        "logger": False,
        "engineio_logger": False,
    }


def init_realtime(app: Flask, server: SocketIO, settings: Settings) -> Realtime:
    """Attach Socket.IO to `app` and give it this process's connection registry."""
    server.init_app(app, **socketio_options(settings))
    _socket_paths_only(app)
    metrics = _RealtimeMetrics(
        connected=app_gauge(
            app, "socketio_connected_clients", "Sockets connected", multiprocess_mode="livesum"
        ),
        events_in=app_counter(
            app, "socketio_events_received_total", "Socket events received", ("event",)
        ),
        events_out=app_counter(app, "socketio_events_sent_total", "Socket events sent", ("event",)),
        disconnects=app_counter(
            app, "socketio_server_disconnects_total", "Sockets the server closed", ("reason",)
        ),
    )
    registry = Realtime(app, server, settings, metrics)
    _PROCESSES.add(registry)
    app.extensions[_EXTENSION] = registry
    return registry


def _socket_paths_only(app: Flask) -> None:
    """Hand only `/socket.io/` requests to the Socket.IO middleware; the others go
    straight to the app. (Under gunicorn the middleware defines a class on every request
    it sees, which cost 2% of a REST request's CPU.)"""
    middleware = app.wsgi_app
    plain, prefix = middleware.wsgi_app, middleware.engineio_path

    def dispatch(environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith(prefix):
            return middleware(environ, start_response)
        return plain(environ, start_response)

    app.wsgi_app = dispatch


def realtime(app: Flask | None = None) -> Realtime:
    """The registry of `app` (default: the current app)."""
    return (app or current_app).extensions[_EXTENSION]


def shutdown_realtime() -> None:
    """End every socket of this process, after telling its clients (the process stops)."""
    for registry in list(_PROCESSES):
        registry.shutdown()

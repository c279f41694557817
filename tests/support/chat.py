"""A real Socket.IO client of the `/chat` namespace, over WebSocket, for tests and benches."""

from __future__ import annotations

import contextlib
import json
import queue
import time
import urllib.error
import urllib.request
from typing import Any

import socketio

NAMESPACE = "/chat"


class RefusedError(Exception):
    """The server refused the connection; `data` is the `connect_error` payload, whose
    `data` member is the server's `{code, message}`."""

    def __init__(self, data: Any) -> None:
        super().__init__(data)
        self.data = data


class ChatClient:
    """One socket: connect with a token, call events for their ACK, read what arrives."""

    def __init__(self, base: str, token: str | None, **options: Any) -> None:
        self.base, self.token, self.options = base, token, options
        self.sio = socketio.Client(reconnection=False)
        self.received: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.refusal: Any = None
        self.disconnected_at: float | None = None
        self.sio.on("*", self._record, namespace=NAMESPACE)
        self.sio.on("connect_error", self._refused, namespace=NAMESPACE)
        self.sio.on("disconnect", self._gone, namespace=NAMESPACE)

    def _record(self, event: str, data: Any = None) -> None:
        self.received.put((event, data))

    def _refused(self, data: Any = None) -> None:
        self.refusal = data

    def _gone(self, *_: Any) -> None:
        self.disconnected_at = time.monotonic()

    def connect(self, *, headers: dict[str, str] | None = None, auth: Any = ...) -> ChatClient:
        """Connect over WebSocket only; `RefusedError` with the server's data if refused."""
        self.disconnected_at = None
        try:
            self.sio.connect(
                self.base,
                namespaces=[NAMESPACE],
                transports=["websocket"],
                auth={"token": self.token} if auth is ... else auth,
                headers=headers or {},
                wait_timeout=10,
                **self.options,
            )
        except socketio.exceptions.ConnectionError:
            raise RefusedError(self.refusal) from None
        return self

    @property
    def connected(self) -> bool:
        """Whether the socket is up (the namespace connected)."""
        return self.sio.connected and self.disconnected_at is None

    def call(self, event: str, data: Any = None, timeout: float = 10) -> Any:
        """Emit and wait for the ACK."""
        return self.sio.call(event, data, namespace=NAMESPACE, timeout=timeout)

    def emit(self, event: str, data: Any = None) -> None:
        """Emit without waiting for anything."""
        self.sio.emit(event, data, namespace=NAMESPACE)

    def next(self, event: str, timeout: float = 10) -> Any:
        """The data of the next `event` received (others received meanwhile are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event!r} within {timeout} s")
            try:
                name, data = self.received.get(timeout=remaining)
            except queue.Empty:
                continue
            if name == event:
                return data

    def until(self, stop: str, event: str, timeout: float = 10) -> list[Any]:
        """Every `event` received before the first `stop` event (which must come)."""
        found, deadline = [], time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                name, data = self.received.get(timeout=remaining)
            except queue.Empty:
                break
            if name == stop:
                return found
            if name == event:
                found.append(data)
        raise TimeoutError(f"no {stop!r} within {timeout} s")

    def drain(self, event: str, wait: float = 0.5) -> list[Any]:
        """Everything named `event` that arrives within `wait` s."""
        found, deadline = [], time.monotonic() + wait
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                name, data = self.received.get(timeout=remaining)
            except queue.Empty:
                break
            if name == event:
                found.append(data)
        return found

    def close(self) -> None:
        """Disconnect (no error if already gone)."""
        with contextlib.suppress(Exception):  # closing whatever state it is in
            self.sio.disconnect()


def rest(base: str, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """A REST call to a served process: status and decoded JSON (None for no body)."""
    request = urllib.request.Request(  # noqa: S310 - a test server
        base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            raw, status = answer.read(), answer.status
    except urllib.error.HTTPError as error:
        raw, status = error.read(), error.code
    return status, json.loads(raw) if raw else None

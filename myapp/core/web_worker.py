"""The gunicorn worker: gevent, answering in the API's envelope, never draining refused bodies.

- Some requests never reach the app: gunicorn refuses a malformed request line, a header
  with control characters, or headers over its limits, and by default answers with an
  HTML page. This worker answers those with the JSON failure envelope instead, with a
  fresh `X-Request-ID` and the same security headers as any other answer.
- When the app answers without reading the request body (a 413 for a body over the
  limit, a 401 before the body mattered), gunicorn would read the rest of it to reuse the
  connection: megabytes of CPU on the worker that every other request waits for. This
  worker closes such a connection instead, after a short, bounded lingering read so the
  client can still read the answer.

Loaded by gunicorn's master process, before any worker patches the standard library with
gevent, so it imports nothing of the app (nothing that would load a database driver).
"""

from __future__ import annotations

import json
import socket
import time

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker
from ulid import ULID

#: The headers every answer carries (the app sets the same ones on its own answers).
HEADERS = (
    ("Content-Type", "application/json"),
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Connection", "close"),
)


STATUS_TEXT = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error"}


def envelope_error(status_int: int, reason: str) -> bytes:
    """The raw HTTP answer for a request gunicorn refused (`status_int`, `reason`).

    Client errors are 400 `BAD_REQUEST`, 403 stays `FORBIDDEN`, anything else is 500
    `INTERNAL_ERROR`. The message names the problem only: nothing the client sent (a
    header, the request line) is echoed back.
    """
    if status_int == 403:
        status, code, message = 403, "FORBIDDEN", "Request forbidden."
    elif 400 <= status_int < 500 or status_int == 501:
        status, code, message = 400, "BAD_REQUEST", f"{reason}."
    else:
        status, code, message = 500, "INTERNAL_ERROR", "Unexpected server error."
    request_id = str(ULID())
    body = json.dumps(
        {
            "success": False,
            "error": {"code": code, "message": message},
            "requestId": request_id,
        }
    ).encode()
    head = [f"HTTP/1.1 {status} {STATUS_TEXT[status]}"]
    head += [f"{name}: {value}" for name, value in HEADERS]
    head += [f"X-Request-ID: {request_id}", f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(head).encode("latin-1") + body


def _write_envelope_error(sock: object, status_int: int, reason: str, _mesg: str) -> None:
    util.write_nonblock(sock, envelope_error(status_int, reason))


#: Bounds of the read after answering a request whose body is left unread.
LINGER_SECONDS = 0.5
LINGER_BYTES = 1024 * 1024


def body_left_unread(req: object) -> bool:
    """The app answered without reading the request body to its end."""
    reader = getattr(getattr(req, "body", None), "reader", None)
    if getattr(reader, "length", 0) > 0:  # Content-Length body, bytes left
        return True
    return getattr(reader, "parser", None) is not None  # chunked body, not at its end


def linger_then_close(sock: socket.socket) -> None:
    """Stop sending, discard what the client still sends (bounded), let gunicorn close.

    Closing with unread data at once would make the kernel reset the connection, which
    can destroy the answer before the client read it.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.1)
        deadline, budget = time.monotonic() + LINGER_SECONDS, LINGER_BYTES
        while budget > 0 and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            budget -= len(data)
    except OSError:
        pass


class EnvelopeGeventWorker(GeventWorker):
    """gunicorn's gevent worker: envelope for its own refusals; refused bodies not drained."""

    def init_process(self) -> None:
        """Swap gunicorn's HTML error writer (used by `handle_error`) for ours."""
        util.write_error = _write_envelope_error
        super().init_process()

    def handle_request(self, listener_name: object, req: object, sock: object, addr: object):
        """Serve as usual; then close, rather than read to its end, a body the app left."""
        handled = super().handle_request(listener_name, req, sock, addr)
        if body_left_unread(req):
            linger_then_close(sock)
            raise StopIteration  # gunicorn's signal to close the connection
        return handled

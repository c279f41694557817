"""A PostgreSQL proxy for tests that counts the statements clients send, on the wire.

It sits between the app and the real server and reads the frontend half of the protocol:
every simple query (`Q`) and every extended-protocol execution (`E`) is one statement,
whichever layer sent it (the ORM, SQLAlchemy Core, psycopg directly, or psycopg on its
own: `BEGIN`, `ROLLBACK`). The text of an execution is taken from the `Parse` that
prepared its statement, so a prepared statement's tenth run still shows its SQL. TLS and
GSS encryption are declined (the proxy answers `N`), so the stream stays readable.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import make_url

_ENCRYPTION_REQUESTS = {80877103, 80877104}  # SSLRequest, GSSENCRequest


class StatementCounter:
    """Listens on a free local port and forwards to `target_url`'s host and port."""

    def __init__(self, target_url: str) -> None:
        target = make_url(target_url)
        self._target = (target.host or "127.0.0.1", target.port or 5432)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = target.set(port=self._listener.getsockname()[1]).render_as_string(
            hide_password=False
        )
        self._lock = threading.Lock()
        self._statements: list[str] = []
        self._counting = False
        threading.Thread(target=self._accept, daemon=True).start()

    @contextmanager
    def counting(self) -> Iterator[list[str]]:
        """Collect the SQL of every statement sent inside the block (into the list)."""
        with self._lock:
            self._statements = []
            self._counting = True
        seen = self._statements
        try:
            yield seen
        finally:
            with self._lock:
                self._counting = False

    def close(self) -> None:
        """Stop accepting (open connections end when their client closes them)."""
        self._listener.close()

    def _record(self, sql: str) -> None:
        with self._lock:
            if self._counting:
                self._statements.append(sql)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._target)
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
            threading.Thread(target=self._read_frontend, args=(client, server), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def _read_frontend(self, client: socket.socket, server: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            self._startup(reader, client, server)
            prepared: dict[str, str] = {}  # statement name -> SQL
            portals: dict[str, str] = {}  # portal name -> SQL
            while header := reader.read(5):
                kind, length = header[:1], struct.unpack("!I", header[1:])[0]
                body = reader.read(length - 4)
                self._note(kind, body, prepared, portals)
                server.sendall(header + body)
        except (OSError, struct.error):
            pass
        finally:
            for end in (client, server):
                end.close()

    @staticmethod
    def _startup(reader: object, client: socket.socket, server: socket.socket) -> None:
        """Pass the startup message on, declining encryption first if asked."""
        while True:
            length = struct.unpack("!I", reader.read(4))[0]
            body = reader.read(length - 4)
            if struct.unpack("!I", body[:4])[0] in _ENCRYPTION_REQUESTS:
                client.sendall(b"N")
                continue
            server.sendall(struct.pack("!I", length) + body)
            return

    def _note(self, kind: bytes, body: bytes, prepared: dict, portals: dict) -> None:
        if kind == b"Q":
            self._record(body.rstrip(b"\0").decode())
        elif kind == b"P":  # Parse: name, query, ...
            name, query, _ = body.split(b"\0", 2)
            prepared[name.decode()] = query.decode()
        elif kind == b"B":  # Bind: portal, statement, ...
            portal, statement, _ = body.split(b"\0", 2)
            portals[portal.decode()] = prepared.get(statement.decode(), "?")
        elif kind == b"E":  # Execute: portal, row limit
            self._record(portals.get(body.split(b"\0", 1)[0].decode(), "?"))

"""Reading a Server-Sent Events response in a test, event by event, with timeouts."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    """One SSE message: an event (id, type, data) or a comment (heartbeat)."""

    id: str | None = None
    event: str | None = None
    data: Any = None
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    @property
    def is_event(self) -> bool:
        """True for an event (not only comments or a retry hint)."""
        return self.event is not None


def parse(block: str) -> Message:
    """One message: the lines between two blank lines."""
    message, data = Message(), []
    for line in block.split("\n"):
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            message.comments.append(value)
        elif name == "id":
            message.id = value
        elif name == "event":
            message.event = value
        elif name == "data":
            data.append(value)
        elif name == "retry":
            message.retry = int(value)
    if data:
        message.data = json.loads("\n".join(data))
    return message


class SSEReader:
    """Reads a streamed response in a thread of its own; `next()` hands messages out."""

    def __init__(self, chunks: Any, close: Any) -> None:
        self._chunks, self._close = chunks, close
        self._messages: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = ""
        try:
            for chunk in self._chunks:
                buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    self._messages.put(parse(block))
                if self._stop.is_set():
                    break
        finally:
            self._close()  # in this thread: the generator is not running now
            self.ended.set()

    def next(self, timeout: float = 10.0) -> Message:
        """The next message; queue.Empty after `timeout` s."""
        return self._messages.get(timeout=timeout)

    def next_event(self, timeout: float = 10.0) -> Message:
        """The next event, skipping comments; queue.Empty when none came within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(deadline - time.monotonic(), 0.001))
            if message.is_event:
                return message

    def events(self, count: int, timeout: float = 10.0) -> list[Message]:
        """The next `count` events."""
        return [self.next_event(timeout) for _ in range(count)]

    def stop(self) -> None:
        """Leave, as a client closing the connection (the server sees it at its next write)."""
        self._stop.set()
        self.ended.wait(30)

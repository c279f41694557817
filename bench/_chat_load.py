"""The load generator of `bench/chat.py`: Socket.IO clients of `/chat`, one greenlet each.

Run by `bench/chat.py` as separate processes (never by hand): `python -m bench._chat_load
PLAN.json`. A python-socketio `Client` costs threads; here a client is one greenlet reading
one `websocket-client` connection, speaking Engine.IO v4 / Socket.IO v5 text packets by
hand: the server's open packet `0{...}`, then `40/chat,{"token": ...}` answered by
`40/chat,{"sid": ...}` (accepted) or `44/chat,{...}` (refused); the server's pings `2` are
answered `3` for as long as the client is held; events `42/chat,[name, data]`; ACKs
`43/chat,<id>[data]`.

The parent gives the plan (a JSON file) and talks to this process over pipes: this process
writes one JSON object per line on stdout (`{"event": ...}`), and reads one command per line
on stdin. Two modes:

- `idle`: connect every token's client (`connect_concurrency` attempts in flight; a refused
  attempt is tried again as a Socket.IO client reconnects: after 1 s, doubling up to 5 s,
  each +-50%, `connect_attempts` in all), report `connected`, hold them (answering pings)
  until `close`, report `closed`, exit.
- `room`: connect every client and `chat:join` the room, report `ready`; on `go` the
  process holding the sender (the first token of process 0) sends `warmup` messages (not
  counted), waits a second, then `messages` messages `interval` s apart, each body carrying
  its send time (`time.time()` just before the frame is written); every client notes when
  each `chat:message` arrived. Once every client has every counted message (or
  `collect_timeout` s after the last send), report `delivered` with all the latencies, the
  first and last latency of each message, and this process's CPU time; exit on `close`.
"""

from gevent import monkey

monkey.patch_all()  # clients are greenlets: patch before anything imports socket

import contextlib  # noqa: E402 - after patching
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import websocket  # noqa: E402
from gevent.event import AsyncResult  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402
from gevent.lock import BoundedSemaphore  # noqa: E402

NAMESPACE_OPEN = "40/chat,"
NAMESPACE_REFUSED = "44/chat,"
NAMESPACE_CLOSED = "41/chat"
EVENT = "42/chat,"
ACK = "43/chat,"
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 5.0  # a Socket.IO client's reconnection delays
_jitter = random.Random()  # noqa: S311 - spreads retries, nothing secret


class RefusedError(Exception):
    """The server answered the namespace connect with `44` (its code is the message)."""


def emit(**fields: Any) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def rss_kib() -> int:
    """This process's resident set size, KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def raise_nofile() -> None:
    """Soft file-descriptor limit up to the hard one (a socket is a descriptor)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class TimedResult(AsyncResult):
    """An AsyncResult that notes when it was set (an ACK's arrival)."""

    value_ready_at = 0.0

    def set(self, value: Any = None) -> None:
        """Note the time, then set."""
        self.value_ready_at = time.time()
        super().set(value)


class Client:
    """One socket of `/chat`: connect, call events for their ACK, hand events on."""

    __slots__ = (
        "acks",
        "attempts",
        "connect_s",
        "error",
        "next_ack",
        "on_event",
        "pings",
        "token",
        "ws",
    )

    def __init__(self, token: str) -> None:
        self.token = token
        self.ws: websocket.WebSocket | None = None
        self.acks: dict[int, TimedResult] = {}
        self.next_ack = 0
        self.attempts = 0
        self.connect_s: float | None = None  # the successful attempt: TCP connect -> `40`
        self.error: str | None = None  # why it is not (or no longer) connected
        self.pings = 0
        self.on_event: Callable[[float, str], None] | None = None

    @property
    def is_open(self) -> bool:
        """Connected and still reading."""
        return self.connect_s is not None and self.error is None

    def connect(self, url: str, timeout: float) -> None:
        """One attempt: WebSocket, Engine.IO open, namespace accepted; raises otherwise."""
        started = time.perf_counter()
        ws = websocket.create_connection(
            url,
            timeout=timeout,
            suppress_origin=True,  # not a browser
            skip_utf8_validation=True,  # pure Python per byte; decoding checks it anyway
        )
        try:
            opening = ws.recv()
            if not opening.startswith("0{"):
                raise ConnectionError(f"unexpected open packet {opening[:60]!r}")
            ws.send(NAMESPACE_OPEN + json.dumps({"token": self.token}))
            while True:
                packet = ws.recv()
                if packet == "2":
                    ws.send("3")
                elif packet.startswith(NAMESPACE_OPEN):
                    break
                elif packet.startswith(NAMESPACE_REFUSED):
                    refusal = json.loads(packet[len(NAMESPACE_REFUSED) :])
                    data = refusal.get("data") or {}
                    raise RefusedError(data.get("code") or refusal.get("message"))
                elif not packet:
                    raise ConnectionError("closed during the namespace connect")
        except BaseException:
            ws.shutdown()
            raise
        ws.settimeout(None)  # held idle: silence between pings is not an error
        self.ws = ws
        self.connect_s = time.perf_counter() - started

    def read(self) -> None:
        """Answer pings, resolve ACKs, hand events on; until the socket ends."""
        ws = self.ws
        try:
            while True:
                packet = ws.recv()
                received = time.time()
                if packet == "2":
                    self.pings += 1
                    ws.send("3")
                elif packet.startswith(EVENT):
                    if self.on_event is not None:
                        self.on_event(received, packet)
                elif packet.startswith(ACK):
                    self._acked(packet)
                elif not packet or packet.startswith(NAMESPACE_CLOSED) or packet == "1":
                    self.error = "the server closed the socket"
                    return
        except (OSError, websocket.WebSocketException) as error:
            if self.error is None:
                self.error = f"{type(error).__name__}: {error}"[:120]

    def _acked(self, packet: str) -> None:
        body = packet[len(ACK) :]
        digits = len(body) - len(body.lstrip("0123456789"))
        waiter = self.acks.pop(int(body[:digits]), None)
        if waiter is not None:
            data = json.loads(body[digits:])  # the handler's return value, as a list
            waiter.set(data[0] if len(data) == 1 else data)

    def call(self, event: str, data: Any) -> TimedResult:
        """Emit `event` with an ACK id; the ACK's data arrives in the returned result."""
        ack_id = self.next_ack
        self.next_ack += 1
        waiter = TimedResult()
        self.acks[ack_id] = waiter
        self.ws.send(f"{EVENT}{ack_id}" + json.dumps([event, data]))
        return waiter

    def close(self) -> None:
        """Leave the namespace and close the WebSocket (without waiting for the server)."""
        if self.ws is None:
            return
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.ws.send(NAMESPACE_CLOSED + ",")
        self.ws.shutdown()


def connect_all(clients: list[Client], plan: dict[str, Any]) -> tuple[float, float, Counter]:
    """Connect every client, each with its reader; (start, end) wall times, refusals.

    `connect_concurrency` attempts are in flight at once; a failed attempt is tried again
    as a Socket.IO client reconnects (1 s, doubling up to 5 s, each +-50%),
    `connect_attempts` times in all.
    """
    gate = BoundedSemaphore(plan["connect_concurrency"])
    refusals: Counter = Counter()

    def run(client: Client) -> None:
        while client.attempts < plan["connect_attempts"]:
            if client.attempts:
                delay = min(RETRY_FIRST_S * 2 ** (client.attempts - 1), RETRY_MAX_S)
                gevent.sleep(delay * _jitter.uniform(0.5, 1.5))
            client.attempts += 1
            try:
                with gate:
                    client.connect(plan["url"], plan["connect_timeout"])
            except (OSError, websocket.WebSocketException, RefusedError) as error:
                reason = f"{type(error).__name__}: {error}"[:120]
                refusals[f"attempt {'1' if client.attempts == 1 else '2+'}: {reason}"] += 1
                client.error = reason
                continue
            client.error = None
            gevent.spawn(client.read)
            return

    started = time.time()
    gevent.joinall([gevent.spawn(run, client) for client in clients])
    return started, time.time(), refusals


def commands() -> Any:
    """The parent's commands, one per line (a cooperative read: pings go on meanwhile)."""
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    while line := stdin.readline():
        yield line.decode().strip()


def close_all(clients: list[Client]) -> None:
    """Close every socket, many at once."""
    gevent.joinall([gevent.spawn(client.close) for client in clients], timeout=30)


def connected_report(
    clients: list[Client], started: float, ended: float, refusals: Counter
) -> dict[str, Any]:
    """The `connected` (or `ready`) line's fields."""
    connected = [c for c in clients if c.connect_s is not None]
    return {
        "attempted": len(clients),
        "connected": len(connected),
        "first_try": sum(1 for c in connected if c.attempts == 1),
        "attempts": sum(c.attempts for c in clients),
        "started_at": started,
        "ended_at": ended,
        "connect_ms": [round(c.connect_s * 1000, 2) for c in connected],
        "refusals": dict(refusals),
        "rss_kib": rss_kib(),
    }


def run_idle(plan: dict[str, Any], orders: Any) -> None:
    """Connect, hold until `close`, report, close."""
    clients = [Client(token) for token in plan["tokens"]]
    started, ended, refusals = connect_all(clients, plan)
    emit(event="connected", **connected_report(clients, started, ended, refusals))
    for order in orders:
        if order == "close":
            break
    lost = Counter(c.error for c in clients if c.connect_s is not None and c.error)
    emit(
        event="closed",
        open=sum(1 for c in clients if c.is_open),
        pinged=sum(1 for c in clients if c.pings),
        pings=sum(c.pings for c in clients),
        lost=dict(lost),
        rss_kib=rss_kib(),
    )
    close_all(clients)


class Deliveries:
    """What the members of this process received: latency of every counted message."""

    def __init__(self, clients: list[Client], messages: int) -> None:
        self.messages = messages
        self.latencies_ms: list[float] = []
        self.spread: dict[int, list[float]] = {}  # seq -> [first, last] latency, ms
        self.seen: list[set[int]] = [set() for _ in clients]
        self.duplicates = 0
        self.complete = 0  # members that have every counted message
        self.done = AsyncResult()
        for index, client in enumerate(clients):
            client.on_event = self._receiver(index)

    def _receiver(self, index: int) -> Callable[[float, str], None]:
        seen = self.seen[index]

        def on_event(received: float, packet: str) -> None:
            name, data = json.loads(packet[len(EVENT) :])[:2]
            if name != "chat:message":
                return
            stamp = json.loads(data["body"])
            if stamp["seq"] < 0:
                return  # a warm-up message
            if stamp["seq"] in seen:
                self.duplicates += 1
                return
            seen.add(stamp["seq"])
            latency = round((received - stamp["sentAt"]) * 1000, 3)
            self.latencies_ms.append(latency)
            spread = self.spread.setdefault(stamp["seq"], [latency, latency])
            spread[0], spread[1] = min(spread[0], latency), max(spread[1], latency)
            if len(seen) == self.messages:
                self.complete += 1
                if self.complete == len(self.seen):
                    self.done.set(True)

        return on_event


def send_messages(client: Client, plan: dict[str, Any]) -> dict[str, Any]:
    """The sender: warm-up messages, a pause, then the counted ones on a fixed schedule."""
    waiters: list[tuple[float, TimedResult]] = []
    acks: Counter = Counter()

    def send(seq: int) -> None:
        sent_at = time.time()
        body = json.dumps({"seq": seq, "sentAt": sent_at})
        payload = {"roomId": plan["room_id"], "clientMsgId": uuid.uuid4().hex, "body": body}
        waiters.append((sent_at, client.call("chat:send", payload)))

    for seq in range(-plan["warmup"], 0):
        send(seq)
        gevent.sleep(plan["interval"])
    gevent.sleep(1.0)
    waiters.clear()  # warm-up ACKs are not counted
    first = time.monotonic()
    for seq in range(plan["messages"]):
        gevent.sleep(max(first + seq * plan["interval"] - time.monotonic(), 0))
        send(seq)
    for _, waiter in waiters:
        try:
            answer = waiter.get(timeout=10)
        except gevent.Timeout:
            acks["no ACK within 10 s"] += 1
            continue
        status = answer.get("status") if isinstance(answer, dict) else None
        code = (answer.get("error") or {}).get("code") if status != "ACCEPTED" else ""
        acks[f"{status} {code}".strip()] += 1
    ack_ms = [round((w.value_ready_at - s) * 1000, 3) for s, w in waiters if w.ready()]
    return {"sent": len(waiters), "acks": dict(acks), "ack_ms": ack_ms}


def join_all(clients: list[Client], room_id: str, concurrency: int) -> Counter:
    """`chat:join` every connected client; the answers that were not `{ok: true}`."""
    gate = BoundedSemaphore(concurrency)
    failures: Counter = Counter()

    def join(client: Client) -> None:
        with gate:
            try:
                answer = client.call("chat:join", {"roomId": room_id}).get(timeout=30)
            except gevent.Timeout:
                failures["no ACK within 30 s"] += 1
                return
        if answer != {"ok": True}:
            failures[json.dumps(answer)[:120]] += 1

    gevent.joinall([gevent.spawn(join, c) for c in clients if c.is_open])
    return failures


def run_room(plan: dict[str, Any], orders: Any) -> None:
    """Connect, join, and on `go` send (the sender) and collect every delivery."""
    clients = [Client(token) for token in plan["tokens"]]
    started, ended, refusals = connect_all(clients, plan)
    join_failures = join_all(clients, plan["room_id"], plan["connect_concurrency"])
    report = connected_report(clients, started, ended, refusals)
    emit(event="ready", joined=report["connected"] - sum(join_failures.values()), **report)
    emit(event="join_failures", failures=dict(join_failures))
    deliveries = Deliveries(clients, plan["messages"])
    for order in orders:
        if order == "go":
            break
    sent: dict[str, Any] = {}
    sender, cpu = None, time.process_time()
    if plan["sender"] and clients[0].is_open:
        sender = gevent.spawn(lambda: sent.update(send_messages(clients[0], plan)))
    elif plan["sender"]:
        sent.update(sent=0, acks={"the sender is not connected": 1}, ack_ms=[])
    deadline = plan["warmup"] * plan["interval"] + 1 + plan["messages"] * plan["interval"]
    deliveries.done.wait(deadline + plan["collect_timeout"])
    if sender is not None:
        sender.join()
    emit(
        event="delivered",
        members=len(clients),
        open=sum(1 for c in clients if c.is_open),
        expected=plan["messages"] * len(clients),
        received=len(deliveries.latencies_ms),
        duplicates=deliveries.duplicates,
        complete=deliveries.complete,
        latencies_ms=deliveries.latencies_ms,
        spread=deliveries.spread,
        cpu_s=time.process_time() - cpu,
        rss_kib=rss_kib(),
        **sent,
    )
    for order in orders:
        if order == "close":
            break
    close_all(clients)


def main() -> int:
    """Read the plan, run its mode."""
    raise_nofile()
    plan = json.loads(Path(sys.argv[1]).read_text())
    emit(event="started", pid=os.getpid())
    orders = commands()
    (run_idle if plan["mode"] == "idle" else run_room)(plan, orders)
    emit(event="exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())

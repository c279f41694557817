"""The load generator of `bench/rollout.py`: a balancer, HTTP load and chat clients (gevent).

Run by `bench/rollout.py` as a separate process (never by hand): `python -m
bench._rollout_load PLAN.json`. It reads commands on stdin (`add web|rt URL`, `static
web|rt on|off`, `start`, `ping`, `snapshot`, `stop`) and writes one JSON object per line
on stdout.

- Balancer: two pools (`web`, `rt`) of backends. Every backend is probed with `GET
  /health/ready` every `probe_s` (1 s), on a new connection each time; only a backend
  whose last probe answered 200 gets traffic (round-robin); an answer other than 200 takes
  it out at once, a probe without an answer (2 s timeout) only the third in a row (a
  loaded host answers late). A new backend gets traffic once its probe answers 200, an
  old one stops getting it once its probe answers non-200 (the drain) or fails three
  times. Nothing else tells the balancer a backend goes away: readiness is the only
  signal, as with a Service whose endpoints follow readiness. `static web on` routes to
  every backend still known, ready or not (a plain upstream list): what a process does by
  itself, readiness aside.
- HTTP load at `rate` req/s: `GET /v1/users/me` and (one in `write_every`) `PATCH
  /v1/users/me` setting the name to a fixed value (idempotent). A request that fails at
  connection level (refused, reset, timeout, closed before any answer) is retried ONCE on
  another ready backend, both being idempotent; an HTTP status is never retried. Failed =
  non-2xx answer or a connection error after the retry.
  Stall = the longest gap between two consecutive successful completions, and the longest
  single request.
- Chat: one socket per member (`tokens`), each connected through the `rt` pool; on
  `server:shutdown` or a lost socket it reconnects to a ready backend, joins again and
  resyncs with `GET /v1/rooms/{id}/messages?after=<last id>` (through the `web` pool).
  Member 0 also sends one message every `chat_interval` s with a unique `clientMsgId`,
  resending the same id on FAILED, no ACK within 3 s, or a reconnect, until ACCEPTED.
"""

from gevent import monkey

monkey.patch_all()

import itertools  # noqa: E402 - after patching
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import urllib3  # noqa: E402
import websocket  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402

from bench._chat_load import Client, RefusedError  # noqa: E402

HTTP = urllib3.PoolManager(num_pools=50, maxsize=100, retries=False)
# Probes on a connection of their own each (as the kubelet's, without keep-alive): a pooled
# connection would keep asking the same gunicorn worker of a backend.
PROBES = urllib3.PoolManager(num_pools=50, maxsize=1, retries=False)
TIMEOUT = urllib3.Timeout(connect=2, read=10)


def emit(**fields: Any) -> None:
    """One JSON line to the parent."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


class Pool:
    """Backends of one role, routed by their readiness."""

    def __init__(self, name: str, probe_s: float) -> None:
        self.name = name
        self.probe_s = probe_s
        self.ready: dict[str, bool] = {}
        self.gone: set[str] = set()
        self.static = False  # route to every known backend, ready or not
        self._rr = itertools.count()

    def add(self, url: str) -> None:
        self.ready.setdefault(url, False)
        gevent.spawn(self._probe, url)

    def _probe(self, url: str) -> None:
        misses = 0
        while True:
            try:
                answer = PROBES.request(
                    "GET",
                    f"{url}/health/ready",
                    headers={"Connection": "close"},
                    timeout=urllib3.Timeout(2, 2),
                    retries=False,
                )
                ok = answer.status == 200  # an answer (the drain's 503) counts at once
                misses = 0
            except urllib3.exceptions.HTTPError:
                misses += 1  # no answer: unready after 3 in a row (a failureThreshold)
                ok = self.ready.get(url, False) and misses < 3
            if self.ready.get(url) != ok:
                emit(event="routing", pool=self.name, url=url, ready=ok, at=time.time())
            self.ready[url] = ok
            if misses >= 5:  # the process is gone
                self.ready.pop(url, None)
                return
            gevent.sleep(self.probe_s)

    def pick(self, avoid: str | None = None) -> str | None:
        live = [url for url, ok in self.ready.items() if (ok or self.static) and url != avoid]
        if not live:
            live = [url for url, ok in self.ready.items() if ok or self.static]
        return live[next(self._rr) % len(live)] if live else None


class Stats:
    """HTTP counters since the last snapshot."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sent = self.ok = self.retried = 0
        self.failed: dict[str, int] = {}
        self.last_done = time.monotonic()
        self.gap = 0.0
        self.longest = 0.0

    def fail(self, reason: str) -> None:
        self.failed[reason] = self.failed.get(reason, 0) + 1

    def done(self, seconds: float) -> None:
        now = time.monotonic()
        self.ok += 1
        self.gap = max(self.gap, now - self.last_done)
        self.last_done = now
        self.longest = max(self.longest, seconds)

    def snapshot(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "retried": self.retried,
            "failed": sum(self.failed.values()),
            "failures": self.failed,
            "gap_s": round(max(self.gap, time.monotonic() - self.last_done), 3),
            "longest_s": round(self.longest, 3),
        }


class Load:
    """Steady HTTP load through the web pool."""

    def __init__(self, plan: dict[str, Any], web: Pool) -> None:
        self.plan, self.web, self.stats = plan, web, Stats()
        self.headers = {
            "Authorization": f"Bearer {plan['web_token']}",
            "Content-Type": "application/json",
        }
        self.running = True
        self.group = gevent.pool.Pool(500)

    def one(self, n: int) -> None:
        write = n % self.plan["write_every"] == 0
        method, body = ("PATCH", json.dumps({"name": "Bench Rollout"})) if write else ("GET", None)
        self.stats.sent += 1
        started = time.monotonic()
        tried: str | None = None
        for attempt in (1, 2):
            backend = self.web.pick(avoid=tried)
            if backend is None:
                self.stats.fail("no ready backend")
                return
            tried = backend
            try:
                answer = HTTP.request(
                    method,
                    f"{backend}/v1/users/me",
                    body=body,
                    headers=self.headers,
                    timeout=TIMEOUT,
                    retries=False,
                )
            except urllib3.exceptions.HTTPError as error:
                if attempt == 1:
                    self.stats.retried += 1
                    continue
                self.stats.fail(f"{type(error).__name__} (after a retry)")
                return
            if 200 <= answer.status < 300:
                self.stats.done(time.monotonic() - started)
            else:
                self.stats.fail(f"HTTP {answer.status} {method}")
            return

    def run(self) -> None:
        interval = 1 / self.plan["rate"]
        start = time.monotonic()
        for n in itertools.count():
            if not self.running:
                return
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            self.group.spawn(self.one, n)


def id_key(value: str) -> Any:
    return int(value) if value.isdigit() else value


class Member:
    """One chat member: a socket that reconnects through the rt pool and resyncs."""

    def __init__(self, plan: dict[str, Any], token: str, rt: Pool, web: Pool) -> None:
        self.plan, self.token, self.rt, self.web = plan, token, rt, web
        self.seen: set[str] = set()  # clientMsgIds seen, live or by resync
        self.last_id: str | None = None
        self.client: Client | None = None
        self.connects = 0
        self.shutdowns = 0
        self.running = True

    def on_event(self, _received: float, packet: str) -> None:
        name, data = json.loads(packet[len("42/chat,") :])[:2]
        if name == "chat:message":
            self.note(data)
        elif name == "server:shutdown":
            self.shutdowns += 1
            if self.client is not None:
                self.client.close()  # the client reconnects (to another backend)

    def note(self, message: dict[str, Any]) -> None:
        self.seen.add(message["clientMsgId"])
        if self.last_id is None or id_key(message["id"]) > id_key(self.last_id):
            self.last_id = message["id"]

    def resync(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        for _ in range(50):
            backend = self.web.pick()
            if backend is None:
                gevent.sleep(0.2)
                continue
            query = f"?limit=100&after={self.last_id}" if self.last_id else "?limit=100"
            try:
                answer = HTTP.request(
                    "GET",
                    f"{backend}/v1/rooms/{self.plan['room_id']}/messages{query}",
                    headers=headers,
                    timeout=TIMEOUT,
                )
            except urllib3.exceptions.HTTPError:
                gevent.sleep(0.2)
                continue
            if answer.status != 200:
                gevent.sleep(0.2)
                continue
            page = json.loads(answer.data)
            for message in page["data"]:
                self.note(message)
            if not (page.get("meta") or {}).get("hasMore"):
                return

    def run(self) -> None:
        while self.running:
            backend = self.rt.pick()
            if backend is None:
                gevent.sleep(0.2)
                continue
            client = Client(self.token)
            client.on_event = self.on_event
            url = backend.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
            try:
                client.connect(url, 5)
            except (OSError, websocket.WebSocketException, RefusedError):
                gevent.sleep(0.3)
                continue
            reader = gevent.spawn(client.read)
            try:
                joined = client.call("chat:join", {"roomId": self.plan["room_id"]}).get(timeout=5)
            except gevent.Timeout:
                joined = None
            if not (isinstance(joined, dict) and joined.get("ok")):
                client.close()
                reader.join(timeout=2)
                gevent.sleep(0.3)
                continue
            self.client = client
            self.connects += 1
            self.resync()
            beat = gevent.spawn(self._heartbeat, client)
            reader.join()
            beat.kill()
            self.client = None
            client.close()

    def _heartbeat(self, client: Client) -> None:
        while client.is_open:
            gevent.sleep(15)
            client.call("presence:heartbeat", None)


class Sender:
    """Member 0 sends; every message is resent with the same id until ACCEPTED."""

    def __init__(self, plan: dict[str, Any], member: Member) -> None:
        self.plan, self.member = plan, member
        self.accepted: list[str] = []
        self.attempts = 0
        self.resent = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            msg_id = str(uuid.uuid4())
            first = True
            while True:
                client = self.member.client
                if client is None or not client.is_open:
                    gevent.sleep(0.05)
                    continue
                self.attempts += 1
                self.resent += 0 if first else 1
                first = False
                try:
                    ack = client.call(
                        "chat:send",
                        {"roomId": self.plan["room_id"], "clientMsgId": msg_id, "body": msg_id},
                    ).get(timeout=3)
                except (gevent.Timeout, OSError, websocket.WebSocketException):
                    continue
                if isinstance(ack, dict) and ack.get("status") == "ACCEPTED":
                    self.accepted.append(msg_id)
                    break
                gevent.sleep(0.2)
            gevent.sleep(self.plan["chat_interval"])


def commands() -> Any:
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    while line := stdin.readline():
        yield line.decode().strip()


def main() -> None:
    plan = json.loads(open(sys.argv[1]).read())  # noqa: PTH123, SIM115
    web, rt = Pool("web", plan["probe_s"]), Pool("rt", plan["probe_s"])
    pools = {"web": web, "rt": rt}
    load = Load(plan, web)
    members = [Member(plan, token, rt, web) for token in plan["chat_tokens"]]
    sender = Sender(plan, members[0])
    started = False
    accepted_at_snapshot = 0
    for command in commands():
        verb, *rest = command.split()
        if verb == "add":
            pools[rest[0]].add(rest[1])
        elif verb == "static":
            pools[rest[0]].static = rest[1] == "on"
        elif verb == "ping":
            emit(event="pong")
        elif verb == "start" and not started:
            started = True
            load.stats.reset()  # the first gap counts from the first request, not from setup
            gevent.spawn(load.run)
            for member in members:
                gevent.spawn(member.run)
            gevent.spawn(sender.run)
        elif verb == "snapshot":
            emit(
                event="snapshot",
                http=load.stats.snapshot(),
                chat_accepted=len(sender.accepted) - accepted_at_snapshot,
                chat_attempts=sender.attempts,
                connected=sum(1 for m in members if m.client is not None),
            )
            accepted_at_snapshot = len(sender.accepted)
            load.stats.reset()
        elif verb == "stop":
            load.running = False
            sender.running = False
            gevent.sleep(plan["settle_s"])  # the last messages reach every member
            for member in members:  # whatever a socket missed, the history has
                member.resync()
            load.group.join(timeout=15)
            emit(
                event="final",
                http=load.stats.snapshot(),
                accepted=sender.accepted,
                resent=sender.resent,
                seen=[sorted(m.seen) for m in members],
                connects=[m.connects for m in members],
                shutdowns=[m.shutdowns for m in members],
            )
            return


if __name__ == "__main__":
    main()

"""A hostile body against one gevent worker: how fast it is refused, and the probes meanwhile.

Sends the body of the security probe (9.5 MB of JSON, 800k unknown keys) to
`POST /v1/auth/register` on the production app (`wsgi:app`, our gunicorn config, one gevent
worker) from 4 client threads, while another thread measures `GET /health/live`. Prints
the refusal latency (median, p99, max), the answer size, and the probe latency with and
without the attack. Goal: refused in under 200 ms with a bounded answer; probes unaffected.

    .venv/bin/python -m bench.hostile_body [--seconds 8]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench._report import report_logger
from bench._setup import server_env
from tests.support.servers import gunicorn

log = report_logger("bench.hostile_body")
BODY = ("{" + ",".join(f'"k{n}":1' for n in range(800_000)) + "}").encode()


def post_hostile(port: int) -> tuple[float, int, int]:
    """Seconds until the whole answer arrived, its status and its size.

    Like a real client, it reads while it sends: the server may answer (and close)
    before the body is through.
    """
    head = (
        "POST /v1/auth/register HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    started = time.perf_counter()
    sender = threading.Thread(target=_send_quietly, args=(sock, head + BODY), daemon=True)
    sender.start()
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    elapsed = time.perf_counter() - started
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return elapsed, status, len(answer)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server may close before the body is through
        sock.sendall(data)


def _length(answer: bytes) -> int:
    head = answer.partition(b"\r\n\r\n")[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def probe(port: int, stop: threading.Event) -> list[float]:
    """Latencies of /health/live until `stop` is set."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        conn.request("GET", "/health/live")
        conn.getresponse().read()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.01)
    return latencies


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie."""
    return sorted(values)[min(int(len(values) * share), len(values) - 1)]


def main() -> int:
    """Probe alone, then probe under the hostile bodies; print both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    with gunicorn("wsgi:app", workers=1, env=server_env("hostile", LOG_LEVEL="WARNING")) as (
        _,
        base,
    ):
        port = int(base.rsplit(":", 1)[1])
        stop = threading.Event()
        timer = threading.Timer(2, stop.set)
        timer.start()
        quiet = probe(port, stop)
        stop.clear()
        deadline = time.monotonic() + args.seconds
        with ThreadPoolExecutor(5) as pool:
            probing = pool.submit(probe, port, stop)
            attacks = []
            while time.monotonic() < deadline:
                attacks.extend(pool.map(lambda _: post_hostile(port), range(4)))
            stop.set()
            loaded = probing.result()
    times = [t for t, _, _ in attacks]
    log.info("%d hostile bodies of %.1f MB, 4 at a time:", len(attacks), len(BODY) / 1e6)
    log.info(
        "  answered %s in median %.0f ms, p99 %.0f ms, max %.0f ms; answers %d bytes at most",
        sorted({status for _, status, _ in attacks}),
        statistics.median(times) * 1000,
        percentile(times, 0.99) * 1000,
        max(times) * 1000,
        max(size for _, _, size in attacks),
    )
    for name, values in (("alone", quiet), ("under attack", loaded)):
        log.info(
            "  /health/live %-12s p50 %.1f ms  p99 %.1f ms  (%d probes)",
            name,
            statistics.median(values) * 1000,
            percentile(values, 0.99) * 1000,
            len(values),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

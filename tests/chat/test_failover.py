"""Chat under failure: two realtime processes and a shutdown, a worker killed between the
ACK and the insert, Redis restarted under connected clients, the broker down.

Each test runs its own processes under a Redis key prefix of its own (their queues too),
so no other test's worker takes its tasks.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from tests.chat.conftest import FAST, ChatStack, served_realtime
from tests.conftest import TEST_APP_NAME, libpq_url, redis_test_url, server_env
from tests.support.chat import RefusedError, rest
from tests.support.servers import ThrowawayRedis, together, wait_until, worker_pids
from tests.support.workers import Worker

pytestmark = pytest.mark.slow


@pytest.fixture
def isolated(app, database_url, tmp_path) -> Iterator[ChatStack]:
    """A stack with its own key prefix; the test starts the processes it needs."""
    env = server_env(database_url, **FAST, APP_NAME=f"{TEST_APP_NAME}-{uuid.uuid4().hex[:8]}")
    stack = ChatStack(app, database_url, tmp_path, env)
    yield stack
    for chat in stack.clients:
        chat.close()


@contextmanager
def worker(stack: ChatStack, name: str, *, measured: bool = True, **env: str) -> Iterator[Worker]:
    running = Worker(
        stack.database_url,
        stack.tmp / f"{name}.log",
        name=name,
        measured=measured,
        **{**stack.env, "LOG_LEVEL": "INFO", **env},
    ).wait_ready()
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()


def send(chat, room_id: str, client_msg_id: str, body: str = "hello") -> dict:
    return chat.call("chat:send", {"roomId": room_id, "clientMsgId": client_msg_id, "body": body})


def stored(stack: ChatStack, room_id: str) -> list[tuple[str, str]]:
    rows = stack.query(
        "SELECT id, client_msg_id FROM messages WHERE room_id = %s ORDER BY id", room_id
    )
    return [(str(message_id), client_msg_id) for message_id, client_msg_id in rows]


def test_two_realtime_processes_share_rooms_and_a_shutdown_loses_no_message(isolated):
    stack = isolated
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    with together(worker(stack, "w"), served_realtime(stack), served_realtime(stack)) as (
        _,
        (leaving, base_1),
        (_, base_2),
    ):
        chat_a, chat_b = stack.joined(a, room, base_1), stack.joined(b, room, base_2)
        assert send(chat_a, room, "across")["status"] == "ACCEPTED"
        assert chat_b.next("chat:message")["clientMsgId"] == "across"  # one process to another

        accepted, stop = [], threading.Event()

        def keep_sending() -> None:  # B talks all through A's switch
            n = 0
            while not stop.is_set():
                if send(chat_b, room, f"b{n}")["status"] == "ACCEPTED":
                    accepted.append(f"b{n}")
                n += 1
                time.sleep(0.05)

        talker = threading.Thread(target=keep_sending)
        talker.start()
        time.sleep(0.5)
        leaving.send_signal(signal.SIGTERM)
        seen = chat_a.until("server:shutdown", "chat:message", timeout=15)
        seen += chat_a.drain("chat:message", wait=0.2)
        wait_until(lambda: not chat_a.connected, 10, "the leaving process to disconnect A")
        leaving.wait(timeout=20)  # and it exits
        chat_a_again = stack.joined(a, room, base_2)  # a client reconnects elsewhere
        time.sleep(1.0)
        stop.set()
        talker.join()

        everything = {"across", *accepted}
        wait_until(lambda: len(stored(stack, room)) == len(everything), 15, "all to be stored")
        rows = stored(stack, room)
        assert sorted(cid for _, cid in rows) == sorted(everything)  # each accepted one, once
        last_seen = seen[-1]["id"]
        status, missed = rest(
            base_2, "GET", f"/v1/rooms/{room}/messages?after={last_seen}&limit=100", a.token
        )
        assert status == 200
        resynced = [m["id"] for m in seen] + [m["id"] for m in missed["data"]]
        assert resynced == [message_id for message_id, _ in rows]  # all, in order, once
        assert leaving.returncode == 0
        assert len(accepted) > 10 and chat_a_again.connected


def test_an_accepted_message_survives_a_killed_worker_and_a_restarted_realtime_process(isolated):
    stack = isolated
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    with together(served_realtime(stack), worker(stack, "doomed")) as ((_, base), doomed):
        chat_a = stack.joined(a, room, base)
        with psycopg.connect(libpq_url(stack.database_url)) as blocker:
            blocker.execute("LOCK TABLE messages IN SHARE ROW EXCLUSIVE MODE")  # inserts wait
            assert send(chat_a, room, "survivor", "keep me")["status"] == "ACCEPTED"
            wait_until(
                lambda: stack.query(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'INSERT INTO messages%%'"
                ),
                30,
                "the worker to be inserting",
            )
            doomed.kill()  # between the ACK and the insert
            blocker.rollback()
    assert stored(stack, room) == []

    with served_realtime(stack) as (_, base):  # the realtime process restarted too
        chat_b = stack.joined(b, room, base)
        with worker(stack, "second"):
            message = chat_b.next("chat:message", timeout=40)
            assert (message["clientMsgId"], message["body"]) == ("survivor", "keep me")
            assert chat_b.drain("chat:message", wait=2.0) == []
    assert [cid for _, cid in stored(stack, room)] == ["survivor"]


def test_after_a_redis_restart_messages_flow_again_within_seconds(isolated, tmp_path):
    redis = ThrowawayRedis(data_dir=tmp_path)
    redis.start()
    stack = isolated
    # The app's Redis restarts (inboxes, presence, the Socket.IO queue); the broker is
    # another Redis, as in production (a broker outage is the next test).
    stack.env = {**stack.env, "REDIS_URL": redis.url, "CELERY_BROKER_URL": redis_test_url()}
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    try:
        # Timed: without coverage, which slows these processes several times over.
        with together(
            served_realtime(stack, measured=False), worker(stack, "w", measured=False)
        ) as ((_, base), _):
            chat_a, chat_b = stack.joined(a, room, base), stack.joined(b, room, base)
            assert send(chat_a, room, "before")["status"] == "ACCEPTED"
            assert chat_b.next("chat:message")["clientMsgId"] == "before"

            redis.stop()
            down = send(chat_a, room, "during")
            assert (down["status"], down["error"]["code"]) == ("FAILED", "SERVICE_UNAVAILABLE")
            with pytest.raises(RefusedError) as refused:  # fail closed while Redis is down
                stack.client(a, base).connect()
            assert refused.value.data["data"]["code"] == "SERVICE_UNAVAILABLE"
            # Upstream's listener retries 1, 3, 7, 15, 31 s after the outage began: back
            # after ~8 s, it would wait ~7 s more, past the 5 s this test allows.
            time.sleep(8.0)
            redis.start()
            back = time.monotonic()

            def accepted() -> bool:  # the client retries with the same clientMsgId
                return send(chat_a, room, "during")["status"] == "ACCEPTED"

            wait_until(accepted, 5, "the send to be accepted again", interval=0.2)
            # Live delivery is pub/sub: what is emitted before a process has subscribed
            # again is lost (history has it). A new message sent after that arrives.
            sent, received = ["during"], None
            while received is None and time.monotonic() - back < 5:
                try:
                    received = chat_b.next("chat:message", timeout=0.5)
                except TimeoutError:
                    sent.append(f"after-{len(sent)}")
                    assert send(chat_a, room, sent[-1])["status"] == "ACCEPTED"
            assert received is not None and received["clientMsgId"] in sent
            assert time.monotonic() - back < 5
            assert chat_a.connected and chat_b.connected  # sockets never depended on Redis
    finally:
        redis.stop()
    wait_until(lambda: len(stored(stack, room)) == 1 + len(sent), 10, "every accepted message")
    assert [cid for _, cid in stored(stack, room)] == ["before", *sent]


def test_with_the_broker_down_a_send_fails_and_its_retry_is_stored_once(isolated, tmp_path):
    broker = ThrowawayRedis(data_dir=tmp_path)
    broker.start()
    stack = isolated
    stack.env = {**stack.env, "CELERY_BROKER_URL": broker.url}
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    try:
        with served_realtime(stack) as (_, base):
            chat_a, chat_b = stack.joined(a, room, base), stack.joined(b, room, base)
            broker.stop()
            failed = send(chat_a, room, "retry-me")
            assert (failed["status"], failed["error"]["code"]) == ("FAILED", "SERVICE_UNAVAILABLE")
            broker.start()
            with worker(stack, "w"):
                assert send(chat_a, room, "retry-me")["status"] == "ACCEPTED"
                assert chat_b.next("chat:message", timeout=20)["clientMsgId"] == "retry-me"
                assert chat_b.drain("chat:message", wait=2.0) == []
    finally:
        broker.stop()
    assert [cid for _, cid in stored(stack, room)] == ["retry-me"]


def test_a_user_whose_process_died_goes_offline_when_the_ttl_runs_out(isolated):
    stack = isolated
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    metrics_dir = stack.tmp / "prom-dying"
    ttl = {"PRESENCE_TTL_SECONDS": "3"}
    with together(
        served_realtime(stack, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), **ttl),
        served_realtime(stack, **ttl),
    ) as ((_, dying), (_, other)):
        stack.client(a, dying).connect()

        def online() -> bool:
            _, members = rest(other, "GET", f"/v1/rooms/{room}/members", b.token)
            return {m["userId"]: m["online"] for m in members["data"]}[a.id]

        assert online() is True
        [pid] = worker_pids(metrics_dir)
        os.kill(pid, signal.SIGKILL)  # no disconnect handler runs
        killed = time.monotonic()
        assert online() is True  # nobody said goodbye: only the TTL ends it
        wait_until(lambda: not online(), 6, "the presence TTL to run out", interval=0.2)
        assert 2 <= time.monotonic() - killed < 5


def test_an_idle_queue_connection_outliving_its_socket_timeout_keeps_delivering(isolated):
    # Upstream's listener treats the socket timeout of an idle pub/sub connection as a
    # failure: it reconnects with a backoff growing to 60 s and drops what came meanwhile.
    stack = isolated
    a, b = stack.person(), stack.person()
    room = stack.room(a, b)
    quick = {"REDIS_SOCKET_TIMEOUT": "1", "LOG_LEVEL": "INFO"}
    with together(
        worker(stack, "w", measured=False),
        served_realtime(stack, measured=False, **quick),
        served_realtime(stack, measured=False, **quick),
    ) as (_, (sender_side, base_1), (receiver_side, base_2)):
        chat_a, chat_b = stack.joined(a, room, base_1), stack.joined(b, room, base_2)
        for n in range(3):
            time.sleep(2.5)  # idle for longer than the socket timeout
            sent = time.monotonic()
            assert send(chat_a, room, f"idle-{n}")["status"] == "ACCEPTED"
            assert chat_b.next("chat:message", timeout=3)["clientMsgId"] == f"idle-{n}"
            assert time.monotonic() - sent < 3
        for process in (sender_side, receiver_side):
            assert "realtime.queue_unavailable" not in process.stderr_text()

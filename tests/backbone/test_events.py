"""Domain events are written to the outbox in the same transaction as the change."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
from sqlalchemy import select

from myapp.audit.models import AuditLog
from myapp.core import events, outbox
from myapp.core.db import unit_of_work
from myapp.core.events import Event, EventReceipt, handle_once
from myapp.core.outbox import OutboxEvent
from tests.conftest import bearer, libpq_url, login

REGISTER = {"email": "events@example.com", "password": "long-enough-pw", "name": "Ev"}


def pending(db_session, name: str, request_id: str) -> list[OutboxEvent]:
    """Events `name` of one request (other tests' servers commit events of their own)."""
    return list(
        db_session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.name == name, OutboxEvent.request_id == request_id)
            .order_by("id")
        )
    )


def test_a_registration_commits_its_event_with_the_user_and_the_audit_row(client, db_session):
    response = client.post("/v1/auth/register", json=REGISTER, headers={"X-Request-ID": "reg-1"})
    assert response.status_code == 201
    user_id = response.get_json()["data"]["id"]

    [event] = pending(db_session, "user.registered", "reg-1")
    assert (event.aggregate_type, event.aggregate_id) == ("user", user_id)
    assert event.payload == {"userId": user_id, "roles": ["user"]}  # ids only, no e-mail
    assert event.request_id == "reg-1" and event.sent_at is None
    audit = db_session.scalars(select(AuditLog).where(AuditLog.target_id == user_id)).one()
    assert audit.request_id == "reg-1"


def test_a_refused_change_leaves_no_event(client, db_session, make_user):
    make_user(email=REGISTER["email"])
    refused = client.post("/v1/auth/register", json=REGISTER, headers={"X-Request-ID": "reg-2"})
    assert refused.status_code == 409
    assert pending(db_session, "user.registered", "reg-2") == []


def test_each_user_change_has_its_event(client, db_session, make_user):
    admin = make_user(roles=("admin",))
    target = make_user()
    headers = bearer(login(client, admin.email))
    path = f"/v1/users/{target.id}"
    assert client.patch(path, json={"name": "New"}, headers=headers).status_code == 200
    roles = client.put(f"{path}/roles", json={"roles": ["manager"]}, headers=headers)
    assert roles.status_code == 200
    assert client.delete(path, headers=headers).status_code == 204
    assert client.post(f"{path}/restore", headers=headers).status_code == 200

    names = [
        (e.name, e.payload)
        for e in db_session.scalars(
            select(OutboxEvent).where(OutboxEvent.aggregate_id == str(target.id)).order_by("id")
        )
    ]
    assert names == [
        ("user.updated", {"userId": str(target.id), "fields": ["name"]}),
        ("user.roles_changed", {"userId": str(target.id), "roles": ["manager"]}),
        ("user.deleted", {"userId": str(target.id)}),
        ("user.restored", {"userId": str(target.id)}),
    ]


def test_handle_once_runs_the_effect_for_the_first_delivery_only(app, db_session):
    event = Event(
        id=uuid.uuid4(),
        name="x.happened",
        aggregate_type="x",
        aggregate_id="1",
        sequence=1,
        payload={},
        occurred_at="2026-01-01T00:00:00+00:00",
        request_id=None,
    )
    seen = []
    with app.app_context():
        for _ in range(3):
            with handle_once("tests.consumer", event.id) as first:
                seen.append(first)
        receipts = db_session.scalars(select(EventReceipt)).all()
    assert seen == [True, False, False]
    assert [(r.consumer, r.event_id) for r in receipts] == [("tests.consumer", event.id)]


def test_a_later_commit_always_gets_the_higher_id_for_one_aggregate(app, database_url):
    """The trap: ids are taken at insert, not at commit. Emitting locks the aggregate,
    so a transaction that emits for it second waits, and its row sorts after."""
    aggregate = f"agg-{uuid.uuid4()}"
    first_emitted = threading.Event()
    order: list[str] = []

    def emit(label: str, hold: float) -> None:
        with app.app_context(), unit_of_work():
            events.emit(
                "test.ping", aggregate_type="test", aggregate_id=aggregate, payload={"by": label}
            )
            first_emitted.set()
            time.sleep(hold)  # still uncommitted
            order.append(label)

    slow = threading.Thread(target=emit, args=("slow", 0.5))
    slow.start()
    first_emitted.wait(5)
    time.sleep(0.05)
    emit("fast", 0)  # blocks on the aggregate's lock until "slow" commits
    slow.join()

    with psycopg.connect(libpq_url(database_url)) as conn:
        rows = conn.execute(
            "SELECT payload->>'by' FROM outbox WHERE aggregate_id = %s ORDER BY id", (aggregate,)
        ).fetchall()
        conn.execute("DELETE FROM outbox WHERE aggregate_id = %s", (aggregate,))
    assert order == ["slow", "fast"]
    assert [by for (by,) in rows] == ["slow", "fast"]


def test_the_relay_claims_only_the_oldest_pending_event_of_each_aggregate(app, db_session):
    with app.app_context():
        with unit_of_work():
            for aggregate in ("a", "a", "b", "a", "b"):
                events.emit("test.ping", aggregate_type="claim", aggregate_id=aggregate, payload={})
        rows = db_session.execute(outbox._CLAIM, {"limit": 100}).all()  # noqa: SLF001
    claimed = [(r.aggregate_id, r.id) for r in rows if r.aggregate_type == "claim"]
    assert [aggregate for aggregate, _ in claimed] == ["a", "b"]
    assert claimed[0][1] < claimed[1][1]

"""Long tasks for the worker cycles of `bench/rollout.py`: users CSV exports.

An export (`POST /v1/users/export`, a `jobs.run` task) reads every visible user, so its
length is set by how many there are: `seed_users` bulk-inserts them (creating them one by
one through `users.service.create_user` costs one argon2 hash each, about 0.1 s: an hour
for the tens of thousands an export of several seconds needs). The rows are what the
service would write: e-mail lower-case, the phone encrypted and blind-indexed by the
model's own `EncryptedField` (so the export decrypts every one, as for real users), one
shared password hash, role `user`.

The exports are started and followed through the API (`GET /v1/jobs/{id}`) as their
requester, the benchmark user made an admin (the `users:read` permission) with the
`users.export` flag switched on (off in production). How many attempts a job took is read
from its row (the API does not show it).
"""

from __future__ import annotations

import json
import time
import urllib.request
from types import SimpleNamespace
from typing import Any

from bench._setup import EMAIL

FINAL = ("succeeded", "failed")


def prepare_exports(app: Any, users: int) -> None:
    """The benchmark user becomes an admin, the `users.export` flag is on, and `users`
    more users exist (bulk insert, in batches)."""
    from sqlalchemy import text

    from myapp.core.context import SYSTEM, bind_actor
    from myapp.extensions import db
    from myapp.flags.service import set_flag

    with app.app_context():
        bind_actor(SYSTEM)
        set_flag(key="users.export", enabled=True)
        db.session.execute(
            text(
                "INSERT INTO user_roles (user_id, role_id) SELECT u.id, r.id FROM users u,"
                " roles r WHERE u.email = :email AND r.name = 'admin' ON CONFLICT DO NOTHING"
            ),
            {"email": EMAIL},
        )
        db.session.commit()
        seed_users(users)
        db.engine.dispose()


def seed_users(count: int, batch: int = 5000) -> None:
    """`count` users `export-<n>@example.com`, each with a phone, role `user` (inside an
    app context)."""
    from sqlalchemy import insert, text

    from myapp.core.db import new_id
    from myapp.core.passwords import hash_password
    from myapp.extensions import db
    from myapp.users.models import User

    password_hash = hash_password("export-user-password")
    field = User.__dict__["phone"]  # the model's EncryptedField (ciphertext + blind index)
    for start in range(0, count, batch):
        rows = []
        for n in range(start, min(count, start + batch)):
            row = SimpleNamespace(id=new_id(), phone_ciphertext=None, phone_bidx=None)
            field.__set__(row, f"+1 555 {n:07d}")
            rows.append(
                {
                    "id": row.id,
                    "email": f"export-{n:07d}@example.com",
                    "name": f"Export User {n}",
                    "phone_ciphertext": row.phone_ciphertext,
                    "phone_bidx": row.phone_bidx,
                    "password_hash": password_hash,
                    "status": "active",
                    "token_version": 0,
                }
            )
        db.session.execute(insert(User), rows)
    db.session.execute(
        text(
            "INSERT INTO user_roles (user_id, role_id) SELECT u.id, r.id FROM users u, roles r"
            " WHERE u.email LIKE 'export-%' AND r.name = 'user'"
        )
    )
    db.session.commit()


class Exports:
    """Start exports and read their state through the API, as their requester."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.started: list[str] = []

    def _call(self, method: str, path: str) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310 - loopback only
            f"{self.base}{path}", method=method, headers=self.headers
        )
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())

    def start(self) -> str:
        """One export; its job id (the API answers 202)."""
        status, body = self._call("POST", "/v1/users/export")
        if status != 202:
            raise RuntimeError(f"export not started: {status} {body}")
        job_id = body["data"]["jobId"]
        self.started.append(job_id)
        return job_id

    def status(self, job_id: str) -> str:
        """`queued`, `running`, `succeeded` or `failed`."""
        return self._call("GET", f"/v1/jobs/{job_id}")[1]["data"]["status"]

    def statuses(self, job_ids: list[str]) -> dict[str, str]:
        """Each job's status now."""
        return {job_id: self.status(job_id) for job_id in job_ids}

    def wait_final(self, job_ids: list[str], deadline_s: float) -> dict[str, str]:
        """Statuses once every job is final, or as they are at the deadline."""
        deadline = time.monotonic() + deadline_s
        while True:
            states = self.statuses(job_ids)
            if all(s in FINAL for s in states.values()) or time.monotonic() > deadline:
                return states
            time.sleep(1)


def job_rows(database_url: str, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each job's row: status, attempts, progress, run time of its last attempt (s)."""
    import psycopg
    from sqlalchemy import make_url

    url = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as conn:
        rows = conn.execute(
            "SELECT id::text, status, attempts, progress,"
            " EXTRACT(EPOCH FROM finished_at - started_at) FROM jobs WHERE id::text = ANY(%s)",
            (job_ids,),
        ).fetchall()
    return {
        row[0]: {
            "status": row[1],
            "attempts": row[2],
            "progress": row[3],
            "run_s": float(row[4]) if row[4] is not None else None,
        }
        for row in rows
    }

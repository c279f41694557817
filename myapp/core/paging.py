"""Paging of service queries: offset pages with a total, and keyset (cursor) pages.

Services return a `Page`; the API blueprint turns it into `data` plus `meta`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, literal, select, tuple_

from myapp.core.bodies import is_clean_text
from myapp.core.errors import AppError
from myapp.extensions import db


@dataclass(slots=True)
class Page:
    """A slice of a list plus its paging metadata (already camelCase-free, dumped by schema)."""

    items: Sequence[Any]
    meta: dict[str, Any] = field(default_factory=dict)


def offset_page(statement: Select, *, page: int, per_page: int, session: Any = None) -> Page:
    """Run `statement` for one offset page and count the total."""
    session = session or db.session
    total = session.execute(select(func.count()).select_from(statement.subquery())).scalar_one()
    items = session.execute(statement.limit(per_page).offset((page - 1) * per_page)).scalars()
    meta = {
        "page": page,
        "per_page": per_page,
        "total": total,
        "total_pages": math.ceil(total / per_page) if total else 0,
    }
    return Page(items=list(items), meta=meta)


def encode_cursor(values: Sequence[Any]) -> str:
    """Opaque, URL-safe cursor for keyset paging."""
    raw = json.dumps([str(v) for v in values], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[str]:
    """Inverse of `encode_cursor`; a tampered cursor is a 400."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError):
        raise AppError("BAD_REQUEST", "Invalid cursor.") from None
    if not isinstance(values, list) or len(values) != size:
        raise AppError("BAD_REQUEST", "Invalid cursor.")
    if not all(isinstance(v, str) and is_clean_text(v) for v in values):
        raise AppError("BAD_REQUEST", "Invalid cursor.")
    return values


def cursor_page(
    statement: Select,
    *,
    keys: Sequence[Any],
    cursor: str | None,
    limit: int,
    descending: bool = False,
    session: Any = None,
) -> Page:
    """Keyset paging on `keys` (unique together, e.g. `(created_at, id)`).

    Rows inserted between calls never shift a page: each page starts strictly after the
    last row of the previous one.
    """
    session = session or db.session
    key_tuple = tuple_(*keys)
    if cursor:
        after = decode_cursor(cursor, len(keys))
        bound = tuple_(*(_typed(k, v) for k, v in zip(keys, after, strict=True)))
        statement = statement.where(key_tuple < bound if descending else key_tuple > bound)
    order = [k.desc() if descending else k.asc() for k in keys]
    rows = list(session.execute(statement.order_by(*order).limit(limit + 1)).scalars())
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if has_more and rows:
        next_cursor = encode_cursor([getattr(rows[-1], k.key) for k in keys])
    return Page(items=rows, meta={"next_cursor": next_cursor, "has_more": has_more})


def _typed(column: Any, value: str) -> Any:
    """Bind a cursor value with the column's type so PostgreSQL compares it correctly."""
    try:
        python_type = column.type.python_type
        parsed = datetime.fromisoformat(value) if python_type is datetime else python_type(value)
    except (NotImplementedError, TypeError, ValueError):
        raise AppError("BAD_REQUEST", "Invalid cursor.") from None
    return literal(parsed, type_=column.type)

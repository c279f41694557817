"""Platform housekeeping run by beat (`myapp/schedule.py`): old outbox rows and receipts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from celery import shared_task
from sqlalchemy import delete

from myapp.core import outbox
from myapp.core.config import current_settings
from myapp.core.db import unit_of_work
from myapp.core.events import EventReceipt
from myapp.core.logging import get_logger
from myapp.extensions import db

log = get_logger(__name__)


@shared_task(name="maintenance.expire_events")
def expire_events() -> dict[str, int]:
    """Delete published outbox rows after `OUTBOX_RETENTION_DAYS` and subscriber receipts
    after `EVENT_RECEIPTS_RETENTION_DAYS` (longer: a receipt must outlive any redelivery
    or dead-letter replay of its event, or the effect could happen twice)."""
    settings = current_settings()
    now = datetime.now(UTC)
    sent = outbox.purge_sent(before=now - timedelta(days=settings.outbox_retention_days))
    with unit_of_work():
        receipts = db.session.execute(
            delete(EventReceipt).where(
                EventReceipt.handled_at
                < now - timedelta(days=settings.event_receipts_retention_days)
            )
        ).rowcount
    log.info("maintenance.events_expired", outbox_rows=sent, receipts=receipts)
    return {"outboxRows": sent, "receipts": receipts}

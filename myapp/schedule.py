"""Every periodic job of the application, in one list (beat sends them; see core/beat.py).

Times are UTC. A job's task should be safe to run late and, rarely, to be skipped: beat
sends each tick once (RedBeat's lock, then a per-tick `SET NX` in the task), and a tick
missed while no beat ran is not caught up.
"""

from __future__ import annotations

from celery.schedules import crontab

from myapp.core.tasks import PeriodicJob

PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    # Erase users soft-deleted more than USERS_PURGE_AFTER_DAYS ago.
    PeriodicJob("users-purge-deleted", "users.purge_deleted", crontab(hour=3, minute=17)),
    # Published outbox rows and old subscriber receipts (retention settings).
    PeriodicJob("expire-events", "maintenance.expire_events", 600.0),
    # Blobs no file row names, and deleted files whose removal did not finish.
    PeriodicJob("files-sweep", "files.sweep", crontab(minute=41)),
    # Running jobs whose worker died (their lock lapsed): queued again, or failed.
    PeriodicJob("jobs-reclaim", "jobs.reclaim_abandoned", 60.0, queue="default"),
    # Chat rooms whose accepted messages waited over 30 s (their persist task was lost).
    PeriodicJob("chat-sweep-inboxes", "chat.sweep_inboxes", 60.0, queue="chat"),
)

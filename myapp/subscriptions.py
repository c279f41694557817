"""Who reacts to which domain event: the one list (event name -> subscriber task names).

The outbox relay sends each event to every task listed for its name, on the queue
`myapp.core.tasks.TASK_ROUTES` gives that task. A subscriber takes one keyword argument,
`event` (see `myapp.core.events.Event`), and dedupes with `handle_once`. Events without
subscribers are still recorded and marked sent (a new subscriber only sees new events).
"""

from __future__ import annotations

_DROP_CACHED = "users.drop_cached"

SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {
    "user.registered": ("users.send_welcome_email", _DROP_CACHED),
    "user.updated": (_DROP_CACHED,),
    "user.deleted": (_DROP_CACHED,),
    "user.restored": (_DROP_CACHED,),
    "user.roles_changed": (_DROP_CACHED,),
    "user.purged": (_DROP_CACHED,),
    "file.deleted": ("files.remove_blob",),
    "job.queued": ("jobs.run",),
    "auth.sessions_ended": ("auth.end_streams",),
}

#: Modules that declare the tasks above and the scheduled ones (imported by the worker).
TASK_MODULES = (
    "myapp.auth.tasks",
    "myapp.users.tasks",
    "myapp.files.tasks",
    "myapp.jobs.tasks",
    "myapp.chat.tasks",
    "myapp.core.maintenance",
)

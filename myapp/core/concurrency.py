"""Keep CPU-heavy calls off the gevent hub.

Password hashing takes tens of milliseconds of CPU; run on the hub it would stall every
other request of the worker. Under gevent, `run_blocking` runs the call in a small
dedicated native-thread pool (`PASSWORD_HASH_THREADS` per worker, created on first use,
i.e. after fork) and yields until it returns; argon2 releases the GIL while it works.
Without gevent (CLI, tests) it simply calls the function.

Long loops that read a socket which always has data waiting (a fast upload) and write a
file (which never blocks the hub) would also keep every other request of the worker
waiting: such loops call `cooperate()` once per chunk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_pool: Any = None
_pool_lock = threading.Lock()


def _gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return False
    return monkey.is_module_patched("socket")


def _threadpool(size: int) -> Any:
    global _pool  # noqa: PLW0603 - one pool per process, created lazily after fork
    with _pool_lock:
        if _pool is None:
            from gevent.threadpool import ThreadPool

            _pool = ThreadPool(maxsize=size)
        return _pool


def run_blocking(func: Callable[..., T], *args: Any, threads: int = 1) -> T:
    """Run `func(*args)` without blocking other greenlets (under gevent)."""
    if not _gevent_active():
        return func(*args)
    return _threadpool(threads).apply(func, args)


def cooperate() -> None:
    """Let the other greenlets of the worker run now (under gevent `time.sleep` is
    gevent's; otherwise this only hands the GIL over)."""
    time.sleep(0)

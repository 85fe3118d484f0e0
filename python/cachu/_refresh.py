"""The threads that run background refreshes for sync callers
(``stale_while_revalidate``): a small pool, so a stale hit costs a queue
put, not a thread start. At interpreter exit the pool lets the refreshes in
flight finish (``concurrent.futures`` joins its workers); a forked child gets
a pool of its own on first use."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Refreshes of different keys that may run at once in one process.
MAX_WORKERS = 4

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def submit(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` on a refresh thread (it handles its own errors)."""
    global _pool
    pool = _pool
    if pool is None:
        with _lock:
            pool = _pool
            if pool is None:
                pool = _pool = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="cachu-refresh")
    pool.submit(fn, *args)


def _forget_in_child() -> None:
    # The parent's workers do not exist in a child of fork().
    global _pool, _lock
    _pool = None
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)

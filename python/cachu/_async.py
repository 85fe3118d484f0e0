"""Caching of coroutine functions."""

from __future__ import annotations

from typing import Any


def make_async_cached(fn: Any, *_: Any) -> Any:
    raise NotImplementedError(
        f"cannot cache coroutine function {getattr(fn, '__qualname__', fn)!r}: "
        "async support is not available in this build of cachu yet"
    )

"""Loud key collisions: two decorated functions whose keys are built alike
(the same ``__name__`` and tag, in one package's backend region) read and
overwrite each other's entries, since 0.2.7's key leaves the module out.
The key stays as it is (other processes may share the cache); the user is
warned at decoration instead."""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from cachu import _cachu

# (package, backend, region ttl, normalised tag, name) -> the functions
# decorated there, held weakly so that a function that is gone (a test's
# local function, a reloaded module's old one) no longer counts.
_Slot = tuple["str | None", str, int, str, str]
_Ref = Callable[[], "Callable[..., Any] | None"]
_seen: dict[_Slot, list[_Ref]] = {}
_lock = threading.Lock()


def _where(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', getattr(fn, '__name__', '?'))}"


def _ref(fn: Callable[..., Any]) -> _Ref:
    try:
        return weakref.ref(fn)
    except TypeError:  # a builtin or another object without weak references
        return lambda: fn


def check(
    fn: Callable[..., Any], name: str, package: str | None, backend: str, region: int, tag: str
) -> None:
    """Warn (``CacheKeyCollisionWarning``) if another live function already
    decorated with the same key head shares ``fn``'s region."""
    slot = (package, backend, region, _cachu.tag_pattern(tag) or "", name)
    here = _where(fn)
    with _lock:
        live = [ref for ref in _seen.get(slot, []) if ref() is not None]
        # The same function decorated again (a module reloaded, a factory's
        # closure) is no collision.
        others = [f for f in (ref() for ref in live) if f is not None and _where(f) != here]
        if len(others) == len(live):  # one entry per module and qualname
            live.append(_ref(fn))
        _seen[slot] = live
    if not others:
        return
    other = others[0]
    where = f"backend {backend!r}, ttl region {_cachu.region_name(region)}"
    warnings.warn(
        f"cachu: {here} and {_where(other)} are both cached as {name!r} in package "
        f"{package!r} ({where}{', tag ' + repr(tag) if tag else ''}), so their calls with equal "
        "arguments share one cache entry and may return each other's results; give one of them "
        "another name, tag, ttl or package",
        _cachu.CacheKeyCollisionWarning,
        stacklevel=3,
    )


def forget() -> None:
    """Forget every function seen (test support)."""
    with _lock:
        _seen.clear()

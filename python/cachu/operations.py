"""Reading, writing, deleting and clearing cache entries by hand."""

from __future__ import annotations

import logging
import types
from collections.abc import Awaitable, Callable
from typing import Any

from cachu import _cachu, _regions
from cachu._offloop import settle
from cachu.config import caller_package, check_backend, get_config
from cachu.types import CacheInfo

_MISSING: Any = object()
_log = logging.getLogger("cachu")


def cached_function(fn: Any) -> _cachu.CachedFunction:
    """The cache machinery behind a decorated function, or ``ValueError``."""
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if isinstance(fn, _cachu.CachedFunction):
        return fn
    inner = getattr(fn, "_cachu", None)
    if isinstance(inner, _cachu.CachedFunction):
        return inner
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    raise ValueError(f"{name} is not decorated with @cache")


def cache_get(fn: Callable[..., Any], default: Any = _MISSING, **kwargs: Any) -> Any:
    """The cached value of ``fn`` for these keyword arguments; ``KeyError``
    if there is none and no ``default`` is given."""
    c = cached_function(fn)
    return c.get(**kwargs) if default is _MISSING else c.get(default, **kwargs)


def cache_set(fn: Callable[..., Any], value: Any, **kwargs: Any) -> None:
    """Store ``value`` as the result of ``fn`` for these keyword arguments."""
    cached_function(fn).set(value, **kwargs)


def cache_delete(fn: Callable[..., Any], **kwargs: Any) -> None:
    """Remove the cached result of ``fn`` for these keyword arguments."""
    cached_function(fn).invalidate(**kwargs)


def cache_clear(
    tag: str | None = None,
    backend: str | None = None,
    ttl: int | None = None,
    package: str | None = None,
    global_clear: bool = False,
) -> int:
    """Remove entries of the caller's package (or ``package``): of one region
    when both ``backend`` and ``ttl`` are given, else of every region that
    matches them, whether a call used it already or a decorator declared it
    (file and Redis regions no call has touched yet are cleared too); only
    keys with ``tag`` when given. On Redis only keys under the package's
    ``key_prefix`` are removed, unless ``global_clear``. Returns how many
    entries were removed, and resets every function's hit/miss counters."""
    if package is None:
        package = caller_package()
    removed = 0
    for region, inst, pattern in _clearing(tag, backend, ttl, package, global_clear):
        try:
            removed += inst.clear(pattern)
        except _cachu.CacheError as e:
            _cold_failure(region, backend, e)
    _cachu.reset_stats()
    return removed


def _clearing(
    tag: str | None,
    backend: str | None,
    ttl: int | None,
    package: str | None,
    global_clear: bool,
) -> list[tuple[tuple[str, int, bool], Any, str | None]]:
    """What a clear does: ``((backend, ttl, cold), instance, glob pattern)``
    for each region it visits (cold: no call made its instance before)."""
    if backend is not None:
        check_backend(backend)
    pattern = _cachu.tag_pattern(tag) if tag else None
    wanted = None if ttl is None else _regions.region_ttl(ttl)
    out = []
    for name, region_ttl, inst, cold in _targets(package, backend, wanted, tag):
        if name == "redis":
            # All regions (and packages) share one Redis database: clear only
            # this region's keys, under this package's prefix (any prefix,
            # but still keys of cachu's shape, when global_clear).
            head = f"{_cachu.region_name(region_ttl)}:"
            if global_clear:
                head += pattern or "*|*"
            else:
                head += _cachu.glob_escape(get_config(package).key_prefix) + (pattern or "*")
            region_pattern: str | None = head
        else:
            # Memory and file regions hold one package's keys; 0.2.7 clears
            # them whatever the key prefix.
            region_pattern = pattern
        out.append(((name, region_ttl, cold), inst, region_pattern))
    return out


def _cold_failure(region: tuple[str, int, bool], backend: str | None, e: Exception) -> None:
    """A region failed to clear: re-raise, unless it was visited only
    because a decorator declared it (its failure must not abort clearing
    the regions that were asked for): then log it."""
    name, region_ttl, cold = region
    if not cold or backend is not None:
        raise e
    _log.warning("cache_clear: could not clear the %s region ttl=%s: %s", name, region_ttl, e)


def _targets(
    package: str | None, backend: str | None, ttl: int | None, tag: str | None
) -> list[tuple[str, int, Any, bool]]:
    """The regions a clear visits: ``(backend, ttl, instance, cold)``, cold
    when no call made the instance before (it was declared)."""
    if backend is not None and ttl is not None:
        had = (backend, ttl) in {(b, t) for b, t, _ in _regions.existing(package)}
        inst = _regions.clearable(package, backend, ttl)
        return [] if inst is None else [(backend, ttl, inst, not had)]
    out = [
        (name, region_ttl, inst, False)
        for name, region_ttl, inst in _regions.existing(package)
        if (backend is None or name == backend) and (ttl is None or region_ttl == ttl)
    ]
    seen = {(name, region_ttl) for name, region_ttl, _, _ in out}
    for name, region_ttl in _regions.declared(package, tag):
        if (name, region_ttl) in seen:
            continue
        if (backend is not None and name != backend) or (ttl is not None and region_ttl != ttl):
            continue
        inst = _regions.clearable(package, name, region_ttl)
        if inst is not None:
            out.append((name, region_ttl, inst, True))
    return out


def cache_info(fn: Callable[..., Any]) -> CacheInfo:
    """Hits and misses of ``fn`` since the last clear, and its live entries."""
    hits, misses, currsize = cached_function(fn)._info()
    return CacheInfo(hits=hits, misses=misses, currsize=currsize)


async def async_cache_get(fn: Callable[..., Any], default: Any = _MISSING, **kwargs: Any) -> Any:
    """Awaitable :func:`cache_get`."""
    c = cached_function(fn)
    args = () if default is _MISSING else (default,)
    return await settle(c._aget(*args, **kwargs))


async def async_cache_set(fn: Callable[..., Any], value: Any, **kwargs: Any) -> None:
    """Awaitable :func:`cache_set`."""
    await settle(cached_function(fn)._aset(value, **kwargs))


async def async_cache_delete(fn: Callable[..., Any], **kwargs: Any) -> None:
    """Awaitable :func:`cache_delete`."""
    await settle(cached_function(fn)._ainvalidate(**kwargs))


def async_cache_clear(
    tag: str | None = None,
    backend: str | None = None,
    ttl: int | None = None,
    package: str | None = None,
    global_clear: bool = False,
) -> Awaitable[int]:
    """Awaitable :func:`cache_clear`. The caller's package is found when this
    is called, not when the awaitable first runs, so
    ``asyncio.run(async_cache_clear(...))`` clears the caller's entries."""
    if package is None:
        package = caller_package()
    return _aclear(tag, backend, ttl, package, global_clear)


async def _aclear(
    tag: str | None, backend: str | None, ttl: int | None, package: str | None, global_clear: bool
) -> int:
    removed = 0
    for region, inst, pattern in _clearing(tag, backend, ttl, package, global_clear):
        try:
            removed += await inst.aclear(pattern)
        except _cachu.CacheError as e:
            _cold_failure(region, backend, e)
    _cachu.reset_stats()
    return removed


async def async_cache_info(fn: Callable[..., Any]) -> CacheInfo:
    """Awaitable :func:`cache_info`."""
    hits, misses, currsize = await settle(cached_function(fn)._ainfo())
    return CacheInfo(hits=hits, misses=misses, currsize=currsize)


__all__ = [
    "async_cache_clear",
    "async_cache_delete",
    "async_cache_get",
    "async_cache_info",
    "async_cache_set",
    "cache_clear",
    "cache_delete",
    "cache_get",
    "cache_info",
    "cache_set",
]

"""The ``@cache`` decorator and access to backend instances."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cachu import _cachu, _collisions, _regions
from cachu._partial import PartialClear, async_clear
from cachu.backends import AsyncBackend, Backend
from cachu.config import caller_package, check_backend, check_ttl, get_config
from cachu.types import CacheEntry

F = TypeVar("F", bound=Callable[..., Any])


def _signature_params(fn: Callable[..., Any]) -> list[tuple[str, bool, Any]]:
    """Positional parameter names with their defaults, as the key sees them."""
    spec = inspect.getfullargspec(fn)
    names = spec.args or []
    defaults = spec.defaults or ()
    first_default = len(names) - len(defaults)
    return [
        (name, i >= first_default, defaults[i - first_default] if i >= first_default else None)
        for i, name in enumerate(names)
    ]


def cache(
    ttl: int | float | Callable[[Any], float] | Callable[[Any, dict[str, Any]], float] = 300,
    backend: str | None = None,
    tag: str = "",
    exclude: set[str] | None = None,
    cache_if: Callable[[Any], bool] | Callable[[Any, dict[str, Any]], bool] | None = None,
    validate: (
        Callable[[CacheEntry], bool] | Callable[[CacheEntry, dict[str, Any]], bool] | None
    ) = None,
    package: str | None = None,
    keep_in_key: set[str] | None = None,
    *,
    stale_while_revalidate: float = 0,
    stale_if_error: float = 0,
) -> Callable[[F], F]:
    """Cache a function's results, keyed by its arguments. Parameters named
    in ``keep_in_key`` stay in the key even when their value looks like a
    database connection (which is otherwise left out, with a warning)."""
    check_ttl(ttl)
    windows = {
        "stale_while_revalidate": _check_window("stale_while_revalidate", stale_while_revalidate),
        "stale_if_error": _check_window("stale_if_error", stale_if_error),
    }
    if callable(ttl) and any(windows.values()):
        given = ", ".join(name for name, seconds in windows.items() if seconds)
        raise TypeError(
            f"{given} needs a fixed ttl (a number of seconds): stale values are told "
            "from fresh ones by it, and this ttl is a callable"
        )
    if package is None:
        package = caller_package()
    backend_name = check_backend(backend) if backend is not None else get_config(package).backend
    region_ttl = -1 if callable(ttl) else int(ttl)
    tag = tag or ""
    if not isinstance(tag, str):
        raise TypeError(f"tag must be a string, got {tag!r}")
    exclude_names = sorted(exclude or ())
    keep_names = sorted(keep_in_key or ())
    # Declared now, so that cache_clear() reaches the region before any call.
    _regions.declare(package, backend_name, region_ttl, tag)
    with_args = [
        name
        for name, predicate in (("ttl", ttl), ("cache_if", cache_if), ("validate", validate))
        if callable(predicate) and _takes_key_args(name, predicate)
    ]

    def resolve() -> tuple[str, Backend, float, str, float | None]:
        cfg = get_config(package)
        return (
            cfg.key_prefix,
            _regions.get(package, backend_name, region_ttl),
            cfg.lock_timeout,
            cfg.on_lock_timeout,
            cfg.cache_deadline,
        )

    def decorator(fn: F) -> F:
        unwrapped = getattr(fn, "__wrapped__", fn)
        cached = _cachu.CachedFunction(
            fn,
            unwrapped.__name__,
            tag,
            region_ttl,
            ttl,
            _signature_params(unwrapped),
            exclude_names,
            cache_if,
            validate,
            CacheEntry,
            windows["stale_while_revalidate"],
            windows["stale_if_error"],
            resolve,
            keep_names,
            package=package,
            with_args=with_args,
        )
        clear = PartialClear(
            package,
            backend_name,
            region_ttl,
            unwrapped.__name__,
            tag,
            exclude_names,
            keep_names,
        )
        _collisions.check(fn, unwrapped.__name__, package, backend_name, region_ttl, tag)
        if inspect.iscoroutinefunction(fn):
            from cachu._async import async_wrapper

            wrapper = async_wrapper(fn, cached)
            wrapper.clear = async_clear(clear)  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]
        functools.update_wrapper(cached, fn)
        cached.clear = clear  # type: ignore[attr-defined]
        return cached  # type: ignore[return-value]

    return decorator


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _takes_key_args(option: str, predicate: Callable[..., Any]) -> bool:
    """Whether ``predicate`` (the ``ttl``, ``cache_if`` or ``validate``
    callable) takes the call's key arguments as a second argument: it has
    two required positional parameters. Otherwise it is called with one, as
    0.2.7 calls it (so ``lambda r, extra=None: ...`` and ``def f(*a)`` keep
    working); one that cannot take a positional argument at all, or that
    requires more than two, is a ``TypeError``. A callable without a
    signature (a builtin such as ``bool``) takes one."""
    try:
        params = list(inspect.signature(predicate).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in _POSITIONAL]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)
    if len(required) > 2 or not (positional or varargs):
        what = "the entry" if option == "validate" else "the result"
        raise TypeError(
            f"{option} must take 1 argument ({what}) or 2 (it and the dict of the call's "
            f"key arguments); {predicate!r} takes {len(required)} required positional "
            "arguments"
        )
    return len(required) == 2


def _check_window(name: str, seconds: object) -> float:
    """A stale window: seconds >= 0 (a number, not a bool)."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {seconds!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds!r}")
    return float(seconds)


def async_cache(
    ttl: int | float | Callable[[Any], float] | Callable[[Any, dict[str, Any]], float] = 300,
    backend: str | None = None,
    tag: str = "",
    exclude: set[str] | None = None,
    cache_if: Callable[[Any], bool] | Callable[[Any, dict[str, Any]], bool] | None = None,
    validate: (
        Callable[[CacheEntry], bool] | Callable[[CacheEntry, dict[str, Any]], bool] | None
    ) = None,
    package: str | None = None,
    keep_in_key: set[str] | None = None,
    *,
    stale_while_revalidate: float = 0,
    stale_if_error: float = 0,
) -> Callable[[F], F]:
    """``@cache`` for coroutine functions (``@cache`` detects them as well)."""
    if package is None:
        package = caller_package()
    return cache(
        ttl,
        backend,
        tag,
        exclude,
        cache_if,
        validate,
        package,
        keep_in_key,
        stale_while_revalidate=stale_while_revalidate,
        stale_if_error=stale_if_error,
    )


def get_backend(
    backend: str | None = None,
    package: str | None = None,
    *,
    ttl: int,
) -> Backend:
    """The backend instance of ``(package, backend, ttl)``, shared with the
    decorated functions of that region."""
    if package is None:
        package = caller_package()
    name = check_backend(backend) if backend is not None else get_config(package).backend
    return _regions.get(package, name, _regions.region_ttl(ttl))


def get_async_backend(
    backend: str | None = None,
    package: str | None = None,
    *,
    ttl: int,
) -> Awaitable[AsyncBackend]:
    """The awaitable face of :func:`get_backend`'s instance (the caller's
    package is found when this is called)."""
    if package is None:
        package = caller_package()
    return _ready(AsyncBackend(get_backend(backend, package, ttl=ttl)))


async def _ready(value: Any) -> Any:
    return value


async def clear_async_backends(package: str | None = None) -> None:
    """Close and forget the backend instances of ``package`` (all when None);
    the next use makes new ones. Entries already stored stay stored in file
    and Redis backends; memory backends are dropped with their entries."""
    for inst in _regions.drop(package, everything=package is None):
        await inst.aclose()


def clear_backends(package: str | None = None) -> None:
    """Sync :func:`clear_async_backends`."""
    for inst in _regions.drop(package, everything=package is None):
        inst.close()


__all__ = [
    "async_cache",
    "cache",
    "clear_async_backends",
    "clear_backends",
    "get_async_backend",
    "get_backend",
]

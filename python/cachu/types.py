"""Value types handed to callbacks and returned by ``cache_info``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class CacheEntry:
    """A cached entry as a ``validate`` callback sees it."""

    value: Any
    #: Unix timestamp of when the entry was stored.
    created_at: float
    #: Seconds since the entry was stored.
    age: float


@dataclass
class CacheInfo:
    """Hit and miss counts of a cached function, and how many entries it has."""

    hits: int
    misses: int
    currsize: int


@dataclass(frozen=True)
class DisabledScopes:
    """What ``cachu.disable()`` has switched off (``get_disabled_scopes()``)."""

    #: Caching is off for every function (``disable()`` with no argument).
    globally: bool
    #: Packages switched off by ``disable(package=...)``.
    packages: frozenset[str]
    #: Tags switched off by ``disable(tag=...)``.
    tags: frozenset[str]


__all__ = ["CacheEntry", "CacheInfo", "DisabledScopes"]

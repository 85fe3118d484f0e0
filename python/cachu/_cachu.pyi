"""Type stubs for the compiled engine module ``cachu._cachu``."""

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, final

from typing_extensions import disjoint_base

from cachu.types import CacheEntry

__all__ = [
    "NO_VALUE",
    "Backend",
    "BackendUnavailableError",
    "CacheError",
    "CacheKeyCollisionWarning",
    "CachedFunction",
    "NoValue",
    "RedisLock",
    "bump_generation",
    "glob_escape",
    "is_disabled",
    "mangle",
    "redact_url",
    "region_name",
    "reset_stats",
    "set_disabled",
    "shutdown_io",
    "tag_pattern",
]

@final
class NoValue:
    """The type of :data:`NO_VALUE`."""

    def __bool__(self) -> bool: ...

#: Returned by ``Backend.get`` on a miss.
NO_VALUE: NoValue

class CacheError(Exception):
    """Base class of the errors a cache backend reports."""

class BackendUnavailableError(CacheError):
    """The backend could not be reached or answered with an error."""

class CacheKeyCollisionWarning(UserWarning):
    """Different calls may share one cache key (and so one another's values)."""

@disjoint_base
class Backend:
    """A cache backend instance (one per ``(package, backend, ttl)`` region)."""

    def __new__(
        cls,
        kind: str,
        path: str | None = None,
        *,
        url: str | None = None,
        socket_timeout: float = 3.0,
        lock_timeout: float = 10.0,
        fail_open: bool = True,
        signing_keys: list[bytes] | None = None,
    ) -> Backend: ...
    @property
    def kind(self) -> str:
        """``'memory'``, ``'null'``, ``'file'`` or ``'redis'``."""
    @property
    def blocking(self) -> bool:
        """Whether calls may wait on I/O (file, redis)."""
    def get(self, key: str) -> Any:
        """The value under ``key``, or ``NO_VALUE``."""
    def get_with_metadata(self, key: str) -> tuple[Any, float | None]:
        """``(value, created_at)``, or ``(NO_VALUE, None)``."""
    def set(self, key: str, value: Any, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (nothing if ``ttl <= 0``)."""
    def delete(self, key: str) -> None: ...
    def clear(self, pattern: str | None = None) -> int:
        """Remove entries whose keys match the glob; returns how many."""
    def keys(self, pattern: str | None = None) -> Iterator[str]: ...
    def count(self, pattern: str | None = None) -> int: ...
    def close(self) -> None: ...

@final
class RedisLock:
    """A distributed dogpile lock held by an async caller while it computes."""

    def release(self) -> None:
        """Release the lock (in the background) without storing anything."""

@final
class CachedFunction:
    """What ``@cache`` returns for a sync function."""

    __wrapped__: Callable[..., Any]
    def __new__(
        cls,
        func: Callable[..., Any],
        name: str,
        tag: str,
        region_ttl: int,
        ttl: float | Callable[[Any], float],
        params: list[tuple[str, bool, Any]],
        exclude: list[str],
        cache_if: Callable[[Any], object] | None,
        validate: Callable[[CacheEntry], object] | None,
        entry_type: type[CacheEntry],
        resolver: Callable[[], tuple[str, Backend, float]],
        keep_in_key: list[str] | None = None,
    ) -> CachedFunction: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __get__(self, obj: object, owner: type | None = None, /) -> Any: ...
    def __reduce__(self) -> str | tuple[Any, ...]: ...
    def get(self, *default: Any, **kwargs: Any) -> Any:
        """The cached value for these keyword arguments; ``KeyError`` if none
        and no ``default``."""
    def set(self, value: Any, **kwargs: Any) -> None: ...
    def invalidate(self, **kwargs: Any) -> None: ...
    def refresh(self, **kwargs: Any) -> Any: ...
    def original(self, *args: Any, **kwargs: Any) -> Any: ...
    def _key(self, **kwargs: Any) -> str: ...
    def _backend(self) -> Backend: ...
    def _info(self) -> tuple[int, int, int]: ...
    def _probe(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None, peek: bool
    ) -> tuple[str | None, int, Any]: ...
    def _peek(self, key: str) -> tuple[bool, Any]: ...
    def _miss(self) -> None: ...
    def _store_result(self, key: str, result: Any) -> None: ...
    def _lock_timeout(self) -> float: ...
    def _aget_or_lock(self, key: str) -> Awaitable[tuple[int, Any]]: ...
    def _await_value(
        self, key: str, timeout: float | None = None, newer_than: float | None = None
    ) -> Awaitable[tuple[bytes, float] | None]: ...
    def _accept(self, key: str, data: bytes, created_at: float) -> tuple[int, Any]: ...
    def _atry_lock(self, key: str) -> Awaitable[tuple[int, Any]]: ...
    def _adelete_unreadable(self, key: str, data: bytes, created_at: float) -> Awaitable[None]: ...
    def _astore(self, key: str, result: Any, lock: RedisLock | None = None) -> Awaitable[None]: ...
    @property
    def _region_ttl(self) -> int: ...

def set_disabled(value: bool) -> None: ...
def is_disabled() -> bool: ...
def bump_generation() -> None: ...
def region_name(ttl: int) -> str: ...
def mangle(base: str, key_prefix: str, ttl: int) -> str: ...
def tag_pattern(tag: str) -> str | None: ...
def glob_escape(text: str) -> str:
    """A glob matching exactly ``text`` in every backend."""

def redact_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` value) shown as ``***``."""

def reset_stats() -> None: ...
def shutdown_io() -> None:
    """Stop the engine's I/O thread from calling back into Python (atexit)."""

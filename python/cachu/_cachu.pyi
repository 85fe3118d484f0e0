"""Type stubs for the compiled engine module ``cachu._cachu``."""

from collections.abc import Awaitable, Callable, Iterator
from typing import Any, final

from typing_extensions import disjoint_base

from cachu.types import CacheEntry

__all__ = [
    "NO_VALUE",
    "AsyncCall",
    "AsyncStep",
    "Backend",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "CacheError",
    "CacheKeyCollisionWarning",
    "CacheLockTimeout",
    "CachedFunction",
    "ConfigurationError",
    "NoValue",
    "base_head",
    "bump_generation",
    "disable_scope",
    "disabled_scopes",
    "enable_all",
    "enable_scope",
    "glob_escape",
    "is_disabled",
    "key_pairs",
    "mangle",
    "redact_url",
    "region_name",
    "reload_log_levels",
    "reset_stats",
    "scope_disabled",
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
    """Base class of every error cachu raises on its own account."""

class BackendUnavailableError(CacheError):
    """The backend could not be reached or answered with an error."""

class CacheKeyCollisionWarning(UserWarning):
    """Different calls may share one cache key (and so one another's values)."""

class CacheLockTimeout(CacheError):
    """A caller gave up waiting for another caller's computation of the same
    key (``on_lock_timeout='raise'``)."""

class ConfigurationError(CacheError, ValueError):
    """An option, or a value given to configure() or @cache, that cannot be used."""

class BackendNotFoundError(ConfigurationError):
    """A backend name that is not one of 'memory', 'redis', 'file', 'null'."""

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
        maxsize: int | None = None,
        max_bytes: int | None = None,
        sweep_interval: float = 60.0,
        require_dir: bool = True,
        retry_count: int = 1,
        health_check_interval: float = 30.0,
        near_cache: int = 0,
        near_prefix: str = "",
    ) -> Backend: ...
    def set_bounds(
        self,
        *,
        maxsize: int | None = None,
        max_bytes: int | None = None,
        sweep_interval: float = 60.0,
    ) -> None:
        """Change a memory backend's bounds now; shrinking evicts down."""
    @property
    def bounds(self) -> tuple[int | None, int | None, float] | None:
        """A memory backend's ``(maxsize, max_bytes, sweep_interval)``."""
    @property
    def evictions(self) -> int | None:
        """Live entries a memory backend removed to keep within its bounds."""
    @property
    def expired_swept(self) -> int | None:
        """Expired entries a memory backend removed on its own."""
    @property
    def nbytes(self) -> int | None:
        """Bytes of values a memory backend holds now."""
    @property
    def near_size(self) -> int | None:
        """Entries a Redis backend's near cache holds now (0 without one)."""
    @property
    def near_state(self) -> tuple[int, bool, int, int] | None:
        """A Redis near cache's ``(capacity, tracking, flushes, invalidations)``."""
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
    # The awaitable face: (True, result) or (False, an awaitable of it).
    def _aget(self, key: str) -> tuple[bool, Any]: ...
    def _aget_with_metadata(self, key: str) -> tuple[bool, Any]: ...
    def _aset(self, key: str, value: Any, ttl: float) -> tuple[bool, Any]: ...
    def _adelete(self, key: str) -> tuple[bool, Any]: ...
    def _aclear(self, pattern: str | None = None) -> tuple[bool, Any]: ...
    def _akeys(self, pattern: str | None = None) -> tuple[bool, Any]: ...
    def _acount(self, pattern: str | None = None) -> tuple[bool, Any]: ...
    def _aclose(self) -> tuple[bool, Any]: ...
    def _key_list(self, pattern: str | None = None) -> list[str]: ...

@final
class AsyncStep:
    """What the Python half of the async driver does next."""

    Run: AsyncStep
    LocalLock: AsyncStep
    Blocking: AsyncStep
    Native: AsyncStep
    Refresh: AsyncStep
    Done: AsyncStep
    def __int__(self) -> int: ...

@final
class AsyncCall:
    """The engine's run of the call protocol for one coroutine call."""

    @property
    def step(self) -> AsyncStep: ...
    @property
    def key(self) -> str: ...
    @property
    def wait(self) -> float: ...
    @property
    def name(self) -> str: ...
    def ran(self, result: Any) -> AsyncStep: ...
    def failed(self, error: BaseException) -> AsyncStep: ...
    def locked(self, waited: bool) -> AsyncStep: ...
    def busy(self) -> AsyncStep: ...
    def perform(self) -> AsyncStep: ...
    def io(self) -> Awaitable[None]: ...
    def resume(self) -> AsyncStep: ...
    def outcome(self) -> Any: ...
    def refresh_call(self) -> AsyncCall: ...
    def finish_refresh(self, failed: bool) -> bool: ...
    def close(self) -> None: ...

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
        ttl: float | Callable[..., float],
        params: list[tuple[str, bool, Any]],
        exclude: list[str],
        cache_if: Callable[..., object] | None,
        validate: Callable[..., object] | None,
        entry_type: type[CacheEntry],
        stale_while_revalidate: float,
        stale_if_error: float,
        resolver: Callable[[], tuple[str, Backend, float, str, float | None]],
        keep_in_key: list[str] | None = None,
        package: str | None = None,
        with_args: list[str] = ...,
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
    # The awaitable helpers: (True, result) or (False, an awaitable of it).
    def _aget(self, *args: Any, **kwargs: Any) -> tuple[bool, Any]: ...
    def _aset(self, value: Any, **kwargs: Any) -> tuple[bool, Any]: ...
    def _ainvalidate(self, **kwargs: Any) -> tuple[bool, Any]: ...
    def _ainfo(self) -> tuple[bool, Any]: ...
    def _acall(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None, overwrite: bool
    ) -> tuple[bool, Any]: ...
    @property
    def _region_ttl(self) -> int: ...

def set_disabled(value: bool) -> None: ...
def is_disabled() -> bool: ...
def disable_scope(package: str | None = None, tag: str | None = None) -> None: ...
def enable_scope(package: str | None = None, tag: str | None = None) -> None: ...
def enable_all() -> None: ...
def scope_disabled(package: str | None = None, tag: str | None = None) -> bool: ...
def disabled_scopes() -> tuple[bool, list[str], list[str]]: ...
def key_pairs(
    kwargs: dict[str, Any], exclude: list[str], keep_in_key: list[str] = ...
) -> list[tuple[str, str]]: ...
def base_head(name: str, tag: str) -> str: ...
def bump_generation() -> None: ...
def region_name(ttl: int) -> str: ...
def mangle(base: str, key_prefix: str, ttl: int) -> str: ...
def tag_pattern(tag: str) -> str | None: ...
def glob_escape(text: str) -> str:
    """A glob matching exactly ``text`` in every backend."""

def redact_url(url: str) -> str:
    """``url`` with its password (and any ``password=`` value) shown as ``***``."""

def reload_log_levels() -> None:
    """Read the Python loggers' levels again (the engine caches them once it logged)."""

def reset_stats() -> None: ...
def shutdown_io() -> None:
    """Stop the engine's I/O thread from calling back into Python (atexit)."""

"""Flexible caching with memory, file (SQLite) and Redis backends, on a Rust engine.

A drop-in replacement for the pure-Python ``cachu`` 0.2.7: same API, same
keys and storage formats, much faster calls.
"""

from cachu import presets
from cachu._cachu import (
    BackendNotFoundError,
    BackendUnavailableError,
    CachedFunction,
    CacheError,
    CacheKeyCollisionWarning,
    CacheLockTimeout,
    ConfigurationError,
)
from cachu.backends import NO_VALUE, AsyncBackend, Backend
from cachu.config import (
    CacheConfig,
    configure,
    disable,
    enable,
    get_all_configs,
    get_config,
    get_disabled_scopes,
    is_disabled,
)
from cachu.decorator import (
    async_cache,
    cache,
    clear_async_backends,
    get_async_backend,
    get_backend,
)
from cachu.operations import (
    async_cache_clear,
    async_cache_delete,
    async_cache_get,
    async_cache_info,
    async_cache_set,
    cache_clear,
    cache_delete,
    cache_get,
    cache_info,
    cache_set,
)
from cachu.redis_client import get_redis_client
from cachu.types import CacheEntry, CacheInfo, DisabledScopes

__version__ = "0.3.0"

__all__ = [
    "NO_VALUE",
    "AsyncBackend",
    "Backend",
    "BackendNotFoundError",
    "BackendUnavailableError",
    "CacheConfig",
    "CacheEntry",
    "CacheError",
    "CacheInfo",
    "CacheKeyCollisionWarning",
    "CacheLockTimeout",
    "CachedFunction",
    "ConfigurationError",
    "DisabledScopes",
    "async_cache",
    "async_cache_clear",
    "async_cache_delete",
    "async_cache_get",
    "async_cache_info",
    "async_cache_set",
    "cache",
    "cache_clear",
    "cache_delete",
    "cache_get",
    "cache_info",
    "cache_set",
    "clear_async_backends",
    "configure",
    "disable",
    "enable",
    "get_all_configs",
    "get_async_backend",
    "get_backend",
    "get_config",
    "get_disabled_scopes",
    "get_redis_client",
    "is_disabled",
    "presets",
]

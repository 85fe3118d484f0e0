"""Per-package configuration.

Each top-level package that uses cachu gets its own settings, found by
looking at who is calling: the first frame outside cachu names the package.
"""

from __future__ import annotations

import math
import os
import pathlib
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from types import FrameType
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from cachu import _cachu
from cachu._cachu import BackendNotFoundError, ConfigurationError
from cachu.types import DisabledScopes

# In 0.2.7's order: its messages show this tuple, and users' tests match them.
BACKENDS = ("memory", "redis", "file", "null")
REDIS_SCHEMES = (
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)


SigningKey = str | bytes | tuple[str | bytes, ...]


@dataclass(repr=False)
class CacheConfig:
    """The settings of one package. Its ``repr`` masks the password of
    ``redis_url`` and leaves out ``signing_key``."""

    backend: str = "memory"
    key_prefix: str = ""
    file_dir: str = "/tmp"
    redis_url: str = "redis://localhost:6379/0"
    lock_timeout: float = 10.0
    #: When Redis is unreachable, decorated calls run the function (logging a
    #: warning once per outage) instead of raising.
    fail_open: bool = True
    #: Bound, in seconds, on connecting to Redis and on each round trip.
    redis_socket_timeout: float = 3.0
    # --- beyond 0.2.7 (spec/EXTENSIONS.md); the defaults change nothing ---
    #: Most live entries one memory region holds (None: unbounded).
    memory_maxsize: int | None = None
    #: Most bytes of values one memory region holds (None: unbounded).
    memory_max_bytes: int | None = None
    #: Least seconds between sweeps of expired memory entries.
    memory_sweep_interval: float = 60.0
    #: After waiting lock_timeout for another caller: 'run' or 'raise'.
    on_lock_timeout: str = "run"
    #: Most seconds of cache work (not the function) in one call; None: no bound.
    cache_deadline: float | None = None
    #: Retries of a round trip that failed at once on a broken connection.
    redis_retry_count: int = 1
    #: A pooled connection idle longer than this is PINGed before use.
    redis_health_check_interval: float = 30.0
    #: Entries per Redis region kept in process memory (0: off).
    redis_near_cache: int = 0
    #: Key(s) signing values written to Redis and files; never shown.
    signing_key: SigningKey | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = _shown(self)
        inner = ", ".join(f"{f.name}={shown[f.name]!r}" for f in fields(self) if f.repr)
        return f"{type(self).__name__}({inner})"


def redact_url(url: str) -> str:
    """``url`` as messages show it: password (and ``password=``) as ``***``."""
    return _cachu.redact_url(url)


def signing_keys(value: SigningKey | None) -> list[bytes] | None:
    """A signing_key setting as the engine takes it: bytes, the signing key first."""
    if value is None:
        return None
    keys = [value] if isinstance(value, (str, bytes)) else list(value)
    return [k.encode() if isinstance(k, str) else k for k in keys]


def check_backend(name: object) -> str:
    """A backend name given to ``@cache``, ``get_backend`` or ``cache_clear``."""
    if name not in BACKENDS:
        # 0.2.7's wording first (users' tests match on it), then the choices.
        raise BackendNotFoundError(
            f"Unknown backend type: {name} (expected one of {', '.join(BACKENDS)})"
        )
    return name  # type: ignore[return-value]


def check_backend_option(name: object) -> str:
    """The ``backend`` option of ``configure()``, with 0.2.7's message."""
    if name not in BACKENDS:
        raise BackendNotFoundError(f"backend must be one of {BACKENDS!r}, got {name!r}")
    return name  # type: ignore[return-value]


def check_ttl(ttl: object) -> None:
    if callable(ttl):
        return
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds or a callable of the result, got {ttl!r}")
    if ttl != ttl:  # NaN
        raise ConfigurationError("ttl must be a number of seconds, got nan")


def check_file_dir(value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(f"file_dir must be an existing directory, got {value!r}")
    path = str(os.fspath(value))
    if not pathlib.Path(path).is_dir():
        raise ConfigurationError(f"file_dir must be an existing directory, got {value!r}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigurationError(
            f"file_dir must be writable, got {value!r} (not writable by this process)"
        )
    return str(path)


def check_redis_url(url: object) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"redis_url must be a string, got a {type(url).__name__}")
    shown = redact_url(url)
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in REDIS_SCHEMES:
        raise ConfigurationError(
            f"malformed redis_url {shown!r}: the scheme must be one of "
            f"{', '.join(s + '://' for s in REDIS_SCHEMES)}"
        )
    if scheme in ("redis", "rediss", "unix"):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as e:
            # urlsplit's own message may quote the URL: not shown.
            reason = "bad port" if "port" in str(e).lower() else "cannot be parsed"
            raise ConfigurationError(f"malformed redis_url {shown!r}: {reason}") from None
        if scheme != "unix" and not parts.hostname:
            raise ConfigurationError(f"malformed redis_url {shown!r}: no host")
    # The engine's own parser (the only one for the cluster and Sentinel
    # forms); connects to nothing, and its messages hide the password.
    _cachu.Backend("redis", url=url)
    return url


def _seconds(name: str) -> Any:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
        return value  # as given, int or float (0.2.7 keeps it as given too)

    return check


def check_fail_open(value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"fail_open must be True or False, got {value!r}")
    return value


def _number(value: object) -> TypeGuard[float]:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _positive_int_or_none(name: str) -> Callable[[object], int | None]:
    def check(value: object) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigurationError(f"{name} must be a positive integer or None, got {value!r}")
        return value

    return check


def _count(name: str) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"{name} must be an integer >= 0, got {value!r}")
        return value

    return check


def _interval(name: str) -> Callable[[object], float]:
    """Seconds >= 0, infinity allowed (never), NaN refused."""

    def check(value: object) -> float:
        if not _number(value) or math.isnan(value) or value < 0:
            raise ConfigurationError(f"{name} must be a number of seconds >= 0, got {value!r}")
        return value

    return check


def check_on_lock_timeout(value: object) -> str:
    if value not in ("run", "raise"):
        raise ConfigurationError(f"on_lock_timeout must be 'run' or 'raise', got {value!r}")
    return value  # type: ignore[return-value]


def check_cache_deadline(value: object) -> float | None:
    if value is None:
        return None
    if not _number(value) or math.isnan(value) or value <= 0:
        raise ConfigurationError(
            f"cache_deadline must be a number of seconds > 0 or None, got {value!r}"
        )
    return value


def check_signing_key(value: object) -> SigningKey | None:
    """A non-empty str/bytes, or a non-empty sequence of them (the first
    signs, all verify). The message never shows the key."""
    if value is None:
        return None
    keys = [value] if isinstance(value, (str, bytes)) else value
    if isinstance(keys, (list, tuple)) and keys:
        if all(isinstance(k, (str, bytes)) and k for k in keys):
            return value if isinstance(value, (str, bytes)) else tuple(keys)
    raise ConfigurationError(
        "signing_key must be a non-empty str or bytes, or a non-empty sequence of them "
        f"(got a {type(value).__name__}; the key itself is not shown)"
    )


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "backend": check_backend_option,
    "key_prefix": lambda v: v if isinstance(v, str) else _bad_prefix(v),
    "file_dir": check_file_dir,
    "redis_url": check_redis_url,
    "lock_timeout": _seconds("lock_timeout"),
    "fail_open": check_fail_open,
    "redis_socket_timeout": _seconds("redis_socket_timeout"),
    "memory_maxsize": _positive_int_or_none("memory_maxsize"),
    "memory_max_bytes": _positive_int_or_none("memory_max_bytes"),
    "memory_sweep_interval": _interval("memory_sweep_interval"),
    "on_lock_timeout": check_on_lock_timeout,
    "cache_deadline": check_cache_deadline,
    "redis_retry_count": _count("redis_retry_count"),
    "redis_health_check_interval": _interval("redis_health_check_interval"),
    "redis_near_cache": _count("redis_near_cache"),
    "signing_key": check_signing_key,
}

#: Options added beyond 0.2.7, whose configure() default means "leave as is"
#: (so that None can be given to reset the ones where None means "off").
EXTENSION_OPTIONS = (
    "memory_maxsize",
    "memory_max_bytes",
    "memory_sweep_interval",
    "on_lock_timeout",
    "cache_deadline",
    "redis_retry_count",
    "redis_health_check_interval",
    "redis_near_cache",
    "signing_key",
)


def _bad_prefix(v: object) -> str:
    raise ConfigurationError(f"key_prefix must be a string, got {v!r}")


_ENV = {
    "CACHU_BACKEND": "backend",
    "CACHU_KEY_PREFIX": "key_prefix",
    "CACHU_FILE_DIR": "file_dir",
    "CACHU_REDIS_URL": "redis_url",
}
_ENV.update({f"CACHU_{name.upper()}": name for name in EXTENSION_OPTIONS})


def _from_env(name: str, raw: str) -> object:
    """An environment variable's text as the option's type (the check runs after)."""
    default = getattr(CacheConfig, name, None)
    if name == "signing_key" or isinstance(default, str):
        return raw
    if raw.strip().lower() in ("", "none"):
        return None
    try:
        number = float(raw)
    except ValueError:
        return raw  # the check names it
    if name in ("memory_maxsize", "memory_max_bytes", "redis_retry_count", "redis_near_cache"):
        return int(number) if number.is_integer() else number
    return number


def _defaults_from_env() -> CacheConfig:
    cfg = CacheConfig()
    for var, name in _ENV.items():
        raw = os.environ.get(var)
        if raw is None:
            continue
        try:
            setattr(cfg, name, _CHECKS[name](_from_env(name, raw)))
        except ValueError as e:
            if name == "signing_key":
                shown = "***"
            elif name == "redis_url":
                shown = repr(redact_url(raw))
            else:
                shown = repr(raw)
            raise ConfigurationError(
                f"environment variable {var}={shown} is invalid: {e}"
            ) from None
    return cfg


def caller_package() -> str | None:
    """The top-level package of the first caller outside cachu."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name and not name.startswith("cachu"):
            top = name.split(".")[0]
            if top == "__main__" and sys.argv and sys.argv[0]:
                return f"__main__.{pathlib.Path(sys.argv[0]).stem}"
            return top
        frame = frame.f_back
    return None


class _Keep:
    """configure()'s default for the options beyond 0.2.7: leave as is."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep()


class _Registry:
    def __init__(self) -> None:
        self.default = _defaults_from_env()
        self.configs: dict[str | None, CacheConfig] = {}
        self.lock = threading.Lock()
        #: Put in front of every key_prefix set while a test is isolated
        #: (``cachu_isolated``), so that configure() cannot undo the isolation.
        self.isolation_prefix = ""

    def get(self, package: str | None) -> CacheConfig:
        return self.configs.get(package, self.default)


_registry = _Registry()


def configure(
    backend: str | None = None,
    key_prefix: str | None = None,
    file_dir: str | os.PathLike[str] | None = None,
    redis_url: str | None = None,
    lock_timeout: float | None = None,
    fail_open: bool | None = None,
    redis_socket_timeout: float | None = None,
    *,
    package: str | None = None,
    memory_maxsize: int | _Keep | None = KEEP,
    memory_max_bytes: int | _Keep | None = KEEP,
    memory_sweep_interval: float | _Keep = KEEP,
    on_lock_timeout: str | _Keep = KEEP,
    cache_deadline: float | _Keep | None = KEEP,
    redis_retry_count: int | _Keep = KEEP,
    redis_health_check_interval: float | _Keep = KEEP,
    redis_near_cache: int | _Keep = KEEP,
    signing_key: SigningKey | _Keep | None = KEEP,
) -> CacheConfig:
    """Set the calling package's options. For the 0.2.7 options ``None``
    leaves an option as is; the options added beyond 0.2.7 are left as they
    are when not given, and take ``None`` where it means "off". File and Redis
    backend instances of the package are reopened with the new settings on
    next use (their stored entries stay where they are)."""
    if package is None:
        package = caller_package()
    given = {
        "backend": backend,
        "key_prefix": key_prefix,
        "file_dir": file_dir,
        "redis_url": redis_url,
        "lock_timeout": lock_timeout,
        "fail_open": fail_open,
        "redis_socket_timeout": redis_socket_timeout,
    }
    updates = {k: _CHECKS[k](v) for k, v in given.items() if v is not None}
    extensions = {
        "memory_maxsize": memory_maxsize,
        "memory_max_bytes": memory_max_bytes,
        "memory_sweep_interval": memory_sweep_interval,
        "on_lock_timeout": on_lock_timeout,
        "cache_deadline": cache_deadline,
        "redis_retry_count": redis_retry_count,
        "redis_health_check_interval": redis_health_check_interval,
        "redis_near_cache": redis_near_cache,
        "signing_key": signing_key,
    }
    updates.update({k: _CHECKS[k](v) for k, v in extensions.items() if v is not KEEP})
    with _registry.lock:
        if "key_prefix" in updates:
            updates["key_prefix"] = _registry.isolation_prefix + updates["key_prefix"]
        cfg = _registry.configs.get(package)
        if cfg is None:
            cfg = _registry.configs[package] = replace(_registry.default)
        for k, v in updates.items():
            setattr(cfg, k, v)
    from cachu import _regions

    _regions.reopen_io(package)
    return cfg


def get_config(package: str | None = None) -> CacheConfig:
    """The config of ``package`` (default: the caller's package)."""
    if package is None:
        package = caller_package()
    return _registry.get(package)


def get_all_configs() -> dict[str | None, dict[str, Any]]:
    """``{'_default': defaults, package: settings, ...}`` as plain dicts."""
    out: dict[str | None, dict[str, Any]] = {"_default": _shown(_registry.default)}
    for pkg, cfg in list(_registry.configs.items()):
        out[pkg] = _shown(cfg)
    return out


def _shown(cfg: CacheConfig) -> dict[str, Any]:
    """A config as a plain dict, with the signing key and the password of
    the Redis URL masked."""
    out = asdict(cfg)
    if out.get("signing_key") is not None:
        out["signing_key"] = "***"
    if isinstance(out.get("redis_url"), str):
        out["redis_url"] = redact_url(out["redis_url"])
    return out


def _check_scope(package: object, tag: object) -> None:
    if package is not None and (not isinstance(package, str) or not package):
        raise ConfigurationError(f"package must be a non-empty string or None, got {package!r}")
    # The empty tag is every untagged function's: it names no scope.
    if tag is not None and (not isinstance(tag, str) or not tag.strip("|")):
        raise ConfigurationError(f"tag must be a non-empty string or None, got {tag!r}")


def disable(package: str | None = None, tag: str | None = None) -> None:
    """Make decorated calls run their function, touching no cache: every
    call when no argument is given (as 0.2.7), else the calls of functions
    of ``package`` and those of functions tagged ``tag`` (scopes add up, and
    a call skips the cache if any scope it belongs to is off)."""
    _check_scope(package, tag)
    if package is None and tag is None:
        _cachu.set_disabled(True)
    else:
        _cachu.disable_scope(package, tag)


def enable(package: str | None = None, tag: str | None = None) -> None:
    """Undo ``disable()``: with no argument, everything (the process-wide
    switch and every scope); else the given scopes, which cannot override a
    process-wide ``disable()``."""
    _check_scope(package, tag)
    if package is None and tag is None:
        _cachu.enable_all()
    else:
        _cachu.enable_scope(package, tag)


def is_disabled(package: str | None = None, tag: str | None = None) -> bool:
    """Whether caching is off process-wide (no argument), or for a function
    of ``package`` with ``tag`` (the test a decorated call makes)."""
    _check_scope(package, tag)
    if package is None and tag is None:
        return _cachu.is_disabled()
    return _cachu.scope_disabled(package, tag)


def get_disabled_scopes() -> DisabledScopes:
    """What is switched off now: the process-wide switch, packages, tags."""
    globally, packages, tags = _cachu.disabled_scopes()
    return DisabledScopes(globally=globally, packages=frozenset(packages), tags=frozenset(tags))


__all__ = [
    "CacheConfig",
    "configure",
    "disable",
    "enable",
    "get_all_configs",
    "get_config",
    "get_disabled_scopes",
    "is_disabled",
]

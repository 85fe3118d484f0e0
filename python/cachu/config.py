"""Per-package configuration.

Each top-level package that uses cachu gets its own settings, found by
looking at who is calling: the first frame outside cachu names the package.
"""

from __future__ import annotations

import os
import pathlib
import sys
import threading
from dataclasses import asdict, dataclass, replace
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from cachu import _cachu

BACKENDS = ("memory", "file", "redis", "null")
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass
class CacheConfig:
    """The settings of one package."""

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


def check_backend(name: object) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
    return name  # type: ignore[return-value]


def check_ttl(ttl: object) -> None:
    if callable(ttl):
        return
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise TypeError(f"ttl must be a number of seconds or a callable of the result, got {ttl!r}")
    if ttl != ttl:  # NaN
        raise ValueError("ttl must be a number of seconds, got nan")


def check_file_dir(value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"file_dir must be a path, got {value!r}")
    path = str(os.fspath(value))
    if not pathlib.Path(path).is_dir():
        raise ValueError(f"file_dir {path!r} is not an existing directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"file_dir {path!r} is not writable")
    return str(path)


def check_redis_url(url: object) -> str:
    if not isinstance(url, str):
        raise ValueError(f"redis_url must be a string, got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as e:
        raise ValueError(f"malformed redis_url {url!r}: {e}") from None
    if parts.scheme not in REDIS_SCHEMES:
        raise ValueError(
            f"malformed redis_url {url!r}: the scheme must be one of "
            f"{', '.join(s + '://' for s in REDIS_SCHEMES)}"
        )
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"malformed redis_url {url!r}: no host")
    _cachu.Backend("redis", url=url)  # the engine's own parser; connects to nothing
    return url


def _seconds(name: str) -> Any:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        return value  # as given, int or float (0.2.7 keeps it as given too)

    return check


def check_fail_open(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"fail_open must be True or False, got {value!r}")
    return value


_CHECKS = {
    "backend": check_backend,
    "key_prefix": lambda v: v if isinstance(v, str) else _bad_prefix(v),
    "file_dir": check_file_dir,
    "redis_url": check_redis_url,
    "lock_timeout": _seconds("lock_timeout"),
    "fail_open": check_fail_open,
    "redis_socket_timeout": _seconds("redis_socket_timeout"),
}


def _bad_prefix(v: object) -> str:
    raise ValueError(f"key_prefix must be a string, got {v!r}")


_ENV = {
    "CACHU_BACKEND": "backend",
    "CACHU_KEY_PREFIX": "key_prefix",
    "CACHU_FILE_DIR": "file_dir",
    "CACHU_REDIS_URL": "redis_url",
}


def _defaults_from_env() -> CacheConfig:
    cfg = CacheConfig()
    for var, field in _ENV.items():
        raw = os.environ.get(var)
        if raw is None:
            continue
        try:
            setattr(cfg, field, _CHECKS[field](raw))
        except ValueError as e:
            raise ValueError(f"environment variable {var}={raw!r} is invalid: {e}") from None
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


class _Registry:
    def __init__(self) -> None:
        self.default = _defaults_from_env()
        self.configs: dict[str | None, CacheConfig] = {}
        self.lock = threading.Lock()

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
) -> CacheConfig:
    """Set the calling package's options; ``None`` leaves an option as is.
    File and Redis backend instances of the package are reopened with the new
    settings on next use (their stored entries stay where they are)."""
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
    with _registry.lock:
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
    out: dict[str | None, dict[str, Any]] = {"_default": asdict(_registry.default)}
    for pkg, cfg in list(_registry.configs.items()):
        out[pkg] = asdict(cfg)
    return out


def disable() -> None:
    """Make every decorated call run its function, touching no cache."""
    _cachu.set_disabled(True)


def enable() -> None:
    """Undo ``disable()``."""
    _cachu.set_disabled(False)


def is_disabled() -> bool:
    return _cachu.is_disabled()


__all__ = [
    "CacheConfig",
    "configure",
    "disable",
    "enable",
    "get_all_configs",
    "get_config",
    "is_disabled",
]

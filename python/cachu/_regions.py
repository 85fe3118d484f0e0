"""The backend instances: one per (package, backend, ttl region), made on
first use so that importing or decorating opens nothing."""

from __future__ import annotations

import os
import threading

from cachu import _cachu
from cachu.config import check_backend, get_config

_lock = threading.Lock()
_instances: dict[tuple[str | None, str, int], _cachu.Backend] = {}


def file_name(package: str | None, ttl: int) -> str:
    """The reference's database file name for a TTL region."""
    if ttl < 60:
        name = f"cache{ttl}sec.db"
    elif ttl < 3600:
        name = f"cache{ttl // 60}min.db"
    else:
        name = f"cache{ttl // 3600}hour.db"
    return f"{package}_{name}" if package else name


def _create(package: str | None, backend: str, ttl: int) -> _cachu.Backend:
    if backend == "memory":
        return _cachu.Backend._memory()
    if backend == "null":
        return _cachu.Backend._null()
    if backend == "file":
        make = getattr(_cachu.Backend, "_file", None)
        if make is None:
            raise NotImplementedError("the 'file' backend is not available in this build of cachu yet")
        return make(os.path.join(get_config(package).file_dir, file_name(package, ttl)))
    raise NotImplementedError(f"the {backend!r} backend is not available in this build of cachu yet")


def ensure_supported(backend: str) -> None:
    """Raise now, at the user's mistake, for a backend this build lacks."""
    check_backend(backend)
    if backend == "file" and not hasattr(_cachu.Backend, "_file"):
        raise NotImplementedError("the 'file' backend is not available in this build of cachu yet")
    if backend == "redis" and not hasattr(_cachu.Backend, "_redis"):
        raise NotImplementedError("the 'redis' backend is not available in this build of cachu yet")


def get(package: str | None, backend: str, ttl: int) -> _cachu.Backend:
    key = (package, backend, ttl)
    found = _instances.get(key)
    if found is not None:
        return found
    with _lock:
        found = _instances.get(key)
        if found is None:
            found = _instances[key] = _create(package, backend, ttl)
    return found


def existing(package: str | None) -> list[tuple[str, int, _cachu.Backend]]:
    """The instances already made for ``package``: (backend, ttl, instance)."""
    with _lock:
        return [(b, t, inst) for (p, b, t), inst in _instances.items() if p == package]


def drop(package: str | None = None, *, everything: bool = False) -> list[_cachu.Backend]:
    """Forget instances (all, or one package's); returns them for closing."""
    with _lock:
        keys = [k for k in _instances if everything or k[0] == package]
        gone = [_instances.pop(k) for k in keys]
    _cachu.bump_generation()
    return gone

"""The backend instances: one per (package, backend, ttl region), made on
first use so that importing or decorating opens nothing; and the regions
decorators declared, so that clearing reaches regions no call has used yet."""

from __future__ import annotations

import os
import threading
from typing import cast

from cachu import _cachu
from cachu.backends import Backend
from cachu.config import check_ttl, get_config, signing_keys

Region = tuple[str | None, str, int]

_lock = threading.Lock()
_instances: dict[Region, Backend] = {}
#: Regions named by a decorator in this process, with the (normalised) tags
#: of the functions declaring them.
_declared: dict[Region, set[str]] = {}
#: Instances set aside by set_aside() (a test's isolation), still open.
_parked: list[dict[Region, Backend]] = []
#: While a test is isolated: every region an instance was made for.
_made: set[Region] | None = None


def region_ttl(ttl: object) -> int:
    """The region a ttl names: whole seconds, or -1 for a callable ttl (the
    region of every function whose ttl depends on its result)."""
    check_ttl(ttl)
    return -1 if callable(ttl) else int(cast(float, ttl))


def file_name(package: str | None, ttl: int) -> str:
    """The reference's database file name for a TTL region."""
    if ttl < 60:
        name = f"cache{ttl}sec.db"
    elif ttl < 3600:
        name = f"cache{ttl // 60}min.db"
    else:
        name = f"cache{ttl // 3600}hour.db"
    return f"{package}_{name}" if package else name


def _memory_bounds(package: str | None) -> dict[str, object]:
    cfg = get_config(package)
    return {
        "maxsize": cfg.memory_maxsize,
        "max_bytes": cfg.memory_max_bytes,
        "sweep_interval": cfg.memory_sweep_interval,
    }


def _create(package: str | None, backend: str, ttl: int) -> Backend:
    if backend == "memory":
        return Backend("memory", **_memory_bounds(package))  # type: ignore[arg-type]
    if backend == "null":
        return Backend(backend)
    cfg = get_config(package)
    if backend == "file":
        # A directory missing now (removed since configure) is an outage of
        # the region, failed open like any other, not an error here.
        path = os.path.join(cfg.file_dir, file_name(package, ttl))
        return Backend(
            "file",
            path,
            fail_open=cfg.fail_open,
            require_dir=False,
            signing_keys=signing_keys(cfg.signing_key),
        )
    return Backend(
        "redis",
        url=cfg.redis_url,
        socket_timeout=cfg.redis_socket_timeout,
        lock_timeout=cfg.lock_timeout,
        fail_open=cfg.fail_open,
        signing_keys=signing_keys(cfg.signing_key),
        retry_count=cfg.redis_retry_count,
        health_check_interval=cfg.redis_health_check_interval,
        # Every key of the region starts with its name (see key_head).
        near_cache=cfg.redis_near_cache,
        near_prefix=_cachu.region_name(ttl) + ":",
    )


def get(package: str | None, backend: str, ttl: int) -> Backend:
    key = (package, backend, ttl)
    found = _instances.get(key)
    if found is not None:
        return found
    with _lock:
        found = _instances.get(key)
        if found is None:
            found = _instances[key] = _create(package, backend, ttl)
            if _made is not None:
                _made.add(key)
    return found


def track(made: set[Region] | None) -> None:
    """Record in ``made`` every region an instance is made for (None: stop)."""
    global _made
    _made = made


def declare(package: str | None, backend: str, ttl: int, tag: str) -> None:
    """Record that a decorated function stores into this region."""
    with _lock:
        _declared.setdefault((package, backend, ttl), set()).add(_cachu.tag_pattern(tag) or "")


def file_path(package: str | None, ttl: int) -> str:
    return os.path.join(get_config(package).file_dir, file_name(package, ttl))


def clearable(package: str | None, backend: str, ttl: int) -> Backend | None:
    """The instance of a region for clearing it, or None when the region
    can hold nothing: memory and null regions not made yet, and file regions
    whose database does not exist (clearing must not create it). Redis
    regions are always opened: other processes may have written them."""
    found = _instances.get((package, backend, ttl))
    if found is not None:
        return found
    if backend == "redis" or (backend == "file" and os.path.exists(file_path(package, ttl))):
        return get(package, backend, ttl)
    return None


def declared(package: str | None, tag: str | None) -> list[tuple[str, int]]:
    """The (backend, ttl) regions of ``package`` that decorators declared
    (with ``tag``, when given)."""
    wanted = _cachu.tag_pattern(tag) if tag else None
    with _lock:
        return [
            (b, t)
            for (p, b, t), tags in _declared.items()
            if p == package and (wanted is None or wanted in tags)
        ]


def existing(package: str | None) -> list[tuple[str, int, Backend]]:
    """The instances already made for ``package``: (backend, ttl, instance)."""
    with _lock:
        return [(b, t, inst) for (p, b, t), inst in _instances.items() if p == package]


def drop(package: str | None = None, *, everything: bool = False) -> list[Backend]:
    """Forget instances (all, or one package's); returns them for closing."""
    with _lock:
        keys = [k for k in _instances if everything or k[0] == package]
        gone = [_instances.pop(k) for k in keys]
    _cachu.bump_generation()
    return gone


def set_aside() -> dict[Region, Backend]:
    """Start afresh with no instance; returns the ones set aside (still open,
    and still closed by the fork hook) for ``put_back``."""
    global _instances
    with _lock:
        aside, _instances = _instances, {}
        _parked.append(aside)
    _cachu.bump_generation()
    return aside


def put_back(aside: dict[Region, Backend]) -> dict[Region, Backend]:
    """Undo ``set_aside``; returns the instances made meanwhile (to close)."""
    global _instances
    with _lock:
        meanwhile, _instances = _instances, aside
        _parked[:] = [d for d in _parked if d is not aside]
    _cachu.bump_generation()
    return meanwhile


def reopen_io(package: str | None) -> None:
    """Close and forget ``package``'s file and Redis instances, so the next
    use opens them with its current settings. Memory instances stay (their
    entries live nowhere else) and take the package's current bounds."""
    with _lock:
        keys = [k for k, inst in _instances.items() if k[0] == package and inst.blocking]
        gone = [_instances.pop(k) for k in keys]
        memory = [inst for k, inst in _instances.items() if k[0] == package and k[1] == "memory"]
    _cachu.bump_generation()
    _cachu.reload_log_levels()  # logging may have been set up since cachu last logged
    for inst in gone:
        inst.close()
    if memory:
        bounds = _memory_bounds(package)
        for inst in memory:
            inst.set_bounds(**bounds)  # type: ignore[arg-type]


def _close_before_fork() -> None:
    # A child must not inherit open SQLite handles (their locks belong to the
    # parent): close them; both sides reopen on next use. No lock is taken,
    # since another thread may hold it at fork time.
    for instances in [_instances, *_parked]:
        for inst in list(instances.values()):
            if inst.blocking:
                inst.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_close_before_fork)

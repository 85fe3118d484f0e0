"""Isolating a test's caching from every other test's: a fresh key prefix,
a fresh file directory and fresh backend instances for every package, put
back as they were afterwards. The pytest fixtures (``cachu.pytest_plugin``)
are thin wrappers around these context managers."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from cachu import _cachu, _regions
from cachu._cachu import glob_escape
from cachu.config import _registry, get_disabled_scopes

_log = logging.getLogger("cachu")


@dataclass(frozen=True)
class Isolation:
    """What ``cachu_isolated`` gave the test."""

    #: Put in front of every package's ``key_prefix`` during the test.
    key_prefix: str
    #: Every package's ``file_dir`` during the test.
    file_dir: str


def fresh_prefix() -> str:
    """A key prefix no other test (nor pytest-xdist worker) uses."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"cachu-test-{worker}-{uuid.uuid4().hex[:12]}:"


@contextmanager
def isolated(file_dir: str) -> Iterator[Isolation]:
    """For the duration of the block, every package (configured already, or
    later, or running on the defaults) has ``fresh_prefix()`` in front of its
    key prefix, ``file_dir`` as its file directory, and new backend
    instances (so memory regions start empty). Afterwards the configs, the
    instances and their memory entries are back as before, and the Redis
    entries written under the fresh prefix are removed."""
    token = fresh_prefix()
    with _registry.lock:
        saved = (_registry.default, _registry.configs, _registry.isolation_prefix)
        _registry.default = replace(
            _registry.default, key_prefix=token + _registry.default.key_prefix, file_dir=file_dir
        )
        _registry.configs = {
            package: replace(cfg, key_prefix=token + cfg.key_prefix, file_dir=file_dir)
            for package, cfg in _registry.configs.items()
        }
        _registry.isolation_prefix = token
    outer = _regions.set_aside()
    made: set[_regions.Region] = set()
    _regions.track(made)
    _cachu.reset_stats()
    try:
        yield Isolation(key_prefix=token, file_dir=file_dir)
    finally:
        _regions.track(None)
        try:
            _remove_redis_entries(made, token)
        finally:
            used = _regions.put_back(outer)
            with _registry.lock:
                _registry.default, _registry.configs, _registry.isolation_prefix = saved
            for inst in used.values():
                if inst.kind == "memory":
                    inst.clear()
                inst.close()


def _remove_redis_entries(made: set[_regions.Region], token: str) -> None:
    """Remove what the test wrote to Redis (under its own prefix). Left
    alone, the entries would only expire by their TTL."""
    for package, backend, ttl in made:
        if backend != "redis":
            continue
        pattern = f"{_cachu.region_name(ttl)}:{glob_escape(token)}*"
        try:
            # The instance, or, if configure() dropped it, a new one.
            _regions.get(package, backend, ttl).clear(pattern)
        except _cachu.CacheError as e:
            _log.warning("cachu_isolated: could not remove the test's Redis entries: %s", e)


@contextmanager
def disabled() -> Iterator[None]:
    """Caching off for every function during the block; afterwards the
    switches (process-wide and scoped) are as they were."""
    before = get_disabled_scopes()
    _cachu.set_disabled(True)
    try:
        yield
    finally:
        _cachu.enable_all()
        _cachu.set_disabled(before.globally)
        for package in before.packages:
            _cachu.disable_scope(package, None)
        for tag in before.tags:
            _cachu.disable_scope(None, tag)

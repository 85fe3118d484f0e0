"""Test support: return the library to its state at import."""

from __future__ import annotations

from cachu import _cachu, _collisions, _regions
from cachu.config import _registry


def reset() -> None:
    """Forget every package config, backend instance (with their entries)
    and declared region, reset all counters, and re-enable caching."""
    with _registry.lock:
        _registry.configs.clear()
    with _regions._lock:
        _regions._declared.clear()
    for inst in _regions.drop(everything=True):
        try:
            inst.clear()
        except _cachu.CacheError:  # a backend a test left unusable
            pass
        inst.close()
    _cachu.reset_stats()
    _cachu.reload_log_levels()
    _collisions.forget()
    _cachu.enable_all()
    _cachu.bump_generation()

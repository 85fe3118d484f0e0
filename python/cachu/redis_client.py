"""``get_redis_client()``: a redis-py client for the configured Redis."""

from __future__ import annotations

from typing import Any

from cachu.config import caller_package, check_redis_url, get_config


def get_redis_client(url: str | None = None, *, package: str | None = None) -> Any:
    """A ``redis.Redis`` client for ``url``, or for the ``redis_url`` of the
    caller's package (or ``package``) when no URL is given."""
    try:
        import redis
    except ImportError:
        raise ImportError(
            "get_redis_client() needs redis-py, which is not installed: pip install 'cachu[redis]'"
        ) from None
    if url is None:
        url = get_config(package if package is not None else caller_package()).redis_url
    return redis.from_url(check_redis_url(url))


__all__ = ["get_redis_client"]

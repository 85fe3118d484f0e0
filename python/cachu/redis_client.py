"""``get_redis_client()``: a redis-py client for the configured Redis."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote

from cachu.config import caller_package, check_redis_url, get_config

# Query parameters of a rediss URL that redis-py takes as keyword arguments.
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


def get_redis_client(url: str | None = None, *, package: str | None = None) -> Any:
    """A redis-py client for ``url``, or for the ``redis_url`` of the
    caller's package (or ``package``) when no URL is given: a ``redis.Redis``
    for one server, a ``redis.cluster.RedisCluster`` for a ``redis+cluster``
    URL, and the current master's client (``Sentinel.master_for``) for a
    ``redis+sentinel`` URL."""
    try:
        import redis
    except ImportError:
        raise ImportError(
            "get_redis_client() needs redis-py, which is not installed: pip install 'cachu[redis]'"
        ) from None
    if url is None:
        url = get_config(package if package is not None else caller_package()).redis_url
    url = check_redis_url(url)
    scheme, _, rest = url.partition("://")
    if scheme.endswith("+cluster"):
        return _cluster_client(redis, scheme, rest)
    if scheme.endswith("+sentinel"):
        return _sentinel_master(redis, scheme, rest)
    return redis.from_url(url)


def _split(rest: str) -> tuple[dict[str, Any], list[tuple[str, int | None]], str, dict[str, str]]:
    """Credentials, hosts, path and query of a multi-host URL (already
    checked by the engine's parser)."""
    rest = rest.split("#", 1)[0]
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    auth: dict[str, Any] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            auth["password"] = unquote(password)
        else:
            user, auth["password"] = "", unquote(user)
        if user:
            auth["username"] = unquote(user)
    nodes: list[tuple[str, int | None]] = []
    for host in hosts.split(","):
        host = host.strip()
        if host.startswith("["):
            name, _, port = host[1:].partition("]")
            port = port.lstrip(":")
        else:
            name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
        nodes.append((name, int(port) if port else None))
    return auth, nodes, path, dict(parse_qsl(query))


def _tls(scheme: str, query: dict[str, str]) -> dict[str, Any]:
    if not scheme.startswith("rediss"):
        return {}
    out: dict[str, Any] = {"ssl": True}
    out.update({k: query[k] for k in _TLS_OPTIONS if k in query})
    if query.get("ssl_check_hostname", "").lower() in ("false", "0", "no", "off"):
        out["ssl_check_hostname"] = False
    return out


def _cluster_client(redis: Any, scheme: str, rest: str) -> Any:
    from redis.cluster import ClusterNode, RedisCluster

    auth, nodes, _, query = _split(rest)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port or 6379) for host, port in nodes],
        **auth,
        **_tls(scheme, query),
    )


def _sentinel_master(redis: Any, scheme: str, rest: str) -> Any:
    from redis.sentinel import Sentinel

    auth, nodes, path, query = _split(rest)
    service, _, db = path.partition("/")
    sentinel_auth = {
        name: query[f"sentinel_{name}"]
        for name in ("username", "password")
        if f"sentinel_{name}" in query
    }
    sentinel = Sentinel(
        [(host, port or 26379) for host, port in nodes],
        sentinel_kwargs=sentinel_auth,
        db=int(db.strip("/") or 0),
        **auth,
        **_tls(scheme, query),
    )
    return sentinel.master_for(service)


__all__ = ["get_redis_client"]

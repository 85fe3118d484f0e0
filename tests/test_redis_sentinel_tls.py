"""``rediss+sentinel://``: a master and a replica that speak TLS only
(replication too), watched by 3 sentinels that reach them over TLS; the
sentinels answer in plain text. Certificates are made for the test by
``openssl``. Calls, helpers, backend objects, ``get_redis_client()`` and a
failover (the master SIGKILLed while threads call) run through the TLS URL.
"""

import asyncio

import cachu
import pytest
import redis
from helpers import within
from redis_server import tls_material
from topology_load import KEYS, Load, assert_caching_resumed, counted


def assert_async_calls_cache(pkg):
    """Async calls of a new function compute once, then hit."""
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    async def g(x):
        runs.append(x)
        return x

    async def twice():
        first = await asyncio.gather(*(g(x) for x in range(8)))
        return first, await asyncio.gather(*(g(x) for x in range(8)))

    assert within(60, asyncio.run, twice()) == (list(range(8)), list(range(8)))
    assert sorted(runs) == list(range(8))


@pytest.fixture
def tls_sentinels(own_sentinels, tmp_path):
    return own_sentinels(tls=tls_material(str(tmp_path)))


def test_calls_helpers_and_client_through_rediss_sentinel(tls_sentinels, pkg):
    assert tls_sentinels.url.startswith("rediss+sentinel://")
    cachu.configure(redis_url=tls_sentinels.url, package=pkg, fail_open=False)
    f, runs = counted(pkg)
    for x in KEYS:
        assert f(x) == {"x": x}
        assert f(x) == {"x": x}
    assert sorted(runs) == list(KEYS)

    assert_async_calls_cache(pkg)
    assert cachu.get_backend("redis", pkg, ttl=300).count() == len(KEYS) + 8

    # The values are on the master, as any TLS client of it sees them.
    peer = tls_sentinels.current_master().client()
    try:
        assert peer.exists(f._key(x=3)) == 1
    finally:
        peer.close()
    # A plain-text client of the TLS-only master gets nowhere.
    port = tls_sentinels.current_master().port
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()

    client = cachu.get_redis_client(package=pkg)
    try:
        assert client.connection_pool.connection_kwargs.get("ssl_ca_certs")
        assert client.execute_command("ROLE")[0] in (b"master", "master")
        assert client.exists(f._key(x=3)) == 1
    finally:
        client.close()


def test_failover_through_rediss_sentinel(tls_sentinels, pkg):
    cachu.configure(redis_url=tls_sentinels.url, package=pkg, redis_socket_timeout=1.0)
    f, runs = counted(pkg)
    for x in KEYS:
        f(x)
    with Load(f) as load:
        load.completed_at_least(200)
        dead = tls_sentinels.kill_master()
        new = tls_sentinels.wait_promoted(dead)
        done_at_promotion = load.completed
        load.completed_at_least(done_at_promotion + 200)
    assert load.errors == []
    assert load.wrong == 0
    assert_caching_resumed(f, runs)
    # The values written after the failover are on the new master (TLS).
    peer = new.client()
    try:
        assert all(peer.exists(f._key(x=x)) for x in KEYS)
    finally:
        peer.close()
    client = cachu.get_redis_client(package=pkg)
    try:
        assert client.connection_pool.connection_kwargs.get("ssl_ca_certs")
        assert client.execute_command("ROLE")[0] in (b"master", "master")
    finally:
        client.close()

    # Async calls follow it too: they store on the new master, then hit.
    assert_async_calls_cache(pkg)

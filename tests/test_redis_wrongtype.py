"""A Redis key of the wrong type (a list, a hash, ...) under a cachu key is
no cachu value: a miss, deleted and replaced, never an outage."""

import logging

import cachu
import pytest
from cachu.decorator import clear_backends


@pytest.fixture(autouse=True)
def on_module_server(server, r):
    cachu.configure(redis_url=server.url, backend="redis", fail_open=False)
    yield
    clear_backends()


def cachu_warnings(caplog):
    return [
        rec
        for rec in caplog.records
        if rec.levelno >= logging.WARNING and "unavailable" in rec.getMessage()
    ]


def test_a_list_under_the_key_is_replaced(r, caplog):
    calls = []

    @cachu.cache(ttl=300)
    def f(x):
        calls.append(x)
        return {"x": x}

    key = "5m:f|x=1"
    r.rpush(key, "not", "cachu")
    assert f(1) == {"x": 1}
    assert r.type(key) == b"string"
    assert f(1) == {"x": 1}
    assert calls == [1]
    assert cachu_warnings(caplog) == []


def test_a_hash_under_the_lock_key_does_not_block(r):
    @cachu.cache(ttl=300)
    def g(x):
        return x * 2

    r.hset("lock:5m:g|x=2", "a", "b")
    assert g(2) == 4
    assert r.type("5m:g|x=2") == b"string"
    assert not r.exists("lock:5m:g|x=2")


def test_helpers_and_backend_objects_read_it_as_missing(r):
    @cachu.cache(ttl=300)
    def h(x):
        return x

    r.sadd("5m:h|x=3", "member")
    assert h.get(default="none", x=3) == "none"
    assert not r.exists("5m:h|x=3")
    backend = cachu.get_backend("redis", ttl=300)
    r.zadd("raw", {"a": 1.0})
    assert backend.get("raw") is cachu.NO_VALUE
    assert not r.exists("raw")


@pytest.mark.asyncio
async def test_async_calls_replace_it(r):
    calls = []

    @cachu.cache(ttl=300)
    async def a(x):
        calls.append(x)
        return [x]

    r.rpush("5m:a|x=4", "junk")
    assert await a(4) == [4]
    assert await a(4) == [4]
    assert calls == [4]
    assert r.type("5m:a|x=4") == b"string"
    r.delete("5m:a|x=4")
    r.rpush("5m:a|x=4", "junk")
    backend = await cachu.get_async_backend("redis", ttl=300)
    assert await backend.get("5m:a|x=4") is cachu.NO_VALUE

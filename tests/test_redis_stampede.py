"""On Redis, a value that cannot be used (rejected by ``validate``, or not a
pickle) is recomputed by one caller under the distributed lock while the
others wait for the new value: no stampede, sync or async."""

import asyncio
import pickle
import struct
import time

import cachu
import pytest
from cachu.decorator import clear_backends
from helpers import run_threads
from redis_raw import put_raw


@pytest.fixture(autouse=True)
def on_server(server):
    c = server.client()
    c.flushall()
    cachu.configure(redis_url=server.url, lock_timeout=30)
    yield c
    clear_backends()
    c.close()


def test_rejected_value_is_recomputed_once_by_threads(on_server):
    calls = []

    @cachu.cache(ttl=300, backend="redis", validate=lambda e: e.age < 60)
    def price(symbol: str) -> str:
        calls.append(symbol)
        time.sleep(0.3)
        return "fresh"

    put_raw(on_server, "5m:price|symbol='X'", "stale", created_at=time.time() - 120)
    results = []
    run_threads([lambda: results.append(price("X"))] * 12)
    assert results == ["fresh"] * 12
    assert len(calls) == 1
    assert not on_server.exists("lock:5m:price|symbol='X'")


def test_unreadable_value_is_recomputed_once_by_threads(on_server):
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    def report(n: int) -> str:
        calls.append(n)
        time.sleep(0.3)
        return "good"

    key = "5m:report|n=1"
    on_server.set(key, struct.pack("d", time.time()) + b"definitely not a pickle", ex=300)
    results = []
    run_threads([lambda: results.append(report(1))] * 12)
    assert results == ["good"] * 12
    assert len(calls) == 1
    raw = on_server.get(key)
    assert pickle.loads(raw[8:]) == "good"


def test_rejected_value_is_recomputed_once_by_tasks(on_server):
    calls = []

    @cachu.cache(ttl=300, backend="redis", validate=lambda e: e.age < 60)
    async def quote(symbol: str) -> str:
        calls.append(symbol)
        await asyncio.sleep(0.3)
        return "fresh"

    put_raw(on_server, "5m:quote|symbol='Y'", "stale", created_at=time.time() - 120)

    async def main():
        return await asyncio.gather(*(quote("Y") for _ in range(50)))

    assert asyncio.run(main()) == ["fresh"] * 50
    assert len(calls) == 1
    assert not on_server.exists("lock:5m:quote|symbol='Y'")


def test_unreadable_value_is_recomputed_once_by_tasks(on_server):
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def summary(n: int) -> str:
        calls.append(n)
        await asyncio.sleep(0.3)
        return "good"

    key = "5m:summary|n=2"
    on_server.set(key, struct.pack("d", time.time()) + b"garbage, not a pickle", ex=300)

    async def main():
        return await asyncio.gather(*(summary(2) for _ in range(50)))

    assert asyncio.run(main()) == ["good"] * 50
    assert len(calls) == 1
    assert pickle.loads(on_server.get(key)[8:]) == "good"

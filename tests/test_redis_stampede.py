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


@pytest.mark.parametrize("face", ["sync", "async"])
def test_caller_late_to_the_lock_uses_the_value_stored_meanwhile(on_server, face):
    """A caller reads the stale value, and before it takes the lock another
    caller has recomputed, stored and let go: the late caller finds the lock
    free, but uses the newer value instead of computing a second time.
    (The late caller is held inside ``validate`` to force that order.)"""
    import threading

    calls = []
    late_has_read, fresh_stored = threading.Event(), threading.Event()

    def validate(entry):
        if entry.value == "stale" and threading.current_thread().name == "late":
            late_has_read.set()
            assert fresh_stored.wait(20)
        return entry.age < 60

    if face == "sync":

        @cachu.cache(ttl=300, backend="redis", validate=validate)
        def price(symbol):
            calls.append(symbol)
            return "fresh"

        call = price
    else:

        @cachu.cache(ttl=300, backend="redis", validate=validate)
        async def aprice(symbol):
            calls.append(symbol)
            return "fresh"

        def call(symbol):
            return asyncio.run(aprice(symbol))

    put_raw(on_server, "5m:price|symbol='X'", "stale", created_at=time.time() - 120)
    put_raw(on_server, "5m:aprice|symbol='X'", "stale", created_at=time.time() - 120)
    results = {}

    def late():
        results["late"] = call("X")

    def first():
        assert late_has_read.wait(20)
        results["first"] = call("X")
        fresh_stored.set()

    t = threading.Thread(target=late, name="late")
    t.start()
    run_threads([first])
    t.join(20)
    assert results == {"late": "fresh", "first": "fresh"}
    assert calls == ["X"]

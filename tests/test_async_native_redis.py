"""Coroutines reach Redis through the engine's native async face: the CRUD
functions, a coroutine function's helpers and ``AsyncBackend`` never hand
work to the loop's thread pool, and the loop keeps running while they wait on
a frozen server (SIGSTOP). Each loop here gets a real thread pool as its
default executor that counts what it is given; file regions, whose writes do
go to the pool, show that the count sees them."""

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import cachu
import pytest

WAIT = 30  # hang guard, seconds


class CountingPool(ThreadPoolExecutor):
    """The loop's default executor: a real pool, counting submissions."""

    def __init__(self):
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return super().submit(*args, **kwargs)


def on_counted_loop(main):
    """Run ``main()`` on a new loop; returns (its result, pool submissions)."""
    loop = asyncio.new_event_loop()
    pool = CountingPool()
    loop.set_default_executor(pool)
    try:
        result = loop.run_until_complete(asyncio.wait_for(main(), WAIT))
    finally:
        loop.close()
        pool.shutdown()
    return result, pool.submitted


def make_fn(backend):
    runs = []

    @cachu.cache(ttl=300, backend=backend)
    async def answer(x):
        runs.append(x)
        return {"x": x}

    answer.runs = runs
    return answer


async def _keys(b):
    return sorted([k async for k in b.keys("5m:*")])


# name -> (coroutine of (fn, async backend), the result it must give)
OPERATIONS = {
    "async_cache_get": (lambda fn, b: cachu.async_cache_get(fn, x=1), {"x": 1}),
    "async_cache_get default": (
        lambda fn, b: cachu.async_cache_get(fn, default="none", x=9),
        "none",
    ),
    "async_cache_set": (lambda fn, b: cachu.async_cache_set(fn, "v", x=2), None),
    "async_cache_delete": (lambda fn, b: cachu.async_cache_delete(fn, x=1), None),
    "async_cache_info": (
        lambda fn, b: cachu.async_cache_info(fn),
        cachu.CacheInfo(hits=0, misses=1, currsize=1),
    ),
    "async_cache_clear": (lambda fn, b: cachu.async_cache_clear(ttl=300), 1),
    "fn.get": (lambda fn, b: fn.get(x=1), {"x": 1}),
    "fn.set": (lambda fn, b: fn.set("v", x=2), None),
    "fn.invalidate": (lambda fn, b: fn.invalidate(x=1), None),
    "fn.refresh": (lambda fn, b: fn.refresh(x=1), {"x": 1}),
    "fn.clear": (lambda fn, b: fn.clear(), 1),
    "fn.clear(x=1)": (lambda fn, b: fn.clear(x=1), 1),
    "AsyncBackend.get": (lambda fn, b: b.get("5m:answer|x=1"), {"x": 1}),
    "AsyncBackend.set": (lambda fn, b: b.set("5m:answer|x=3", "v", 60), None),
    "AsyncBackend.delete": (lambda fn, b: b.delete("5m:answer|x=1"), None),
    "AsyncBackend.clear": (lambda fn, b: b.clear("5m:*"), 1),
    "AsyncBackend.keys": (lambda fn, b: _keys(b), ["5m:answer|x=1"]),
    "AsyncBackend.count": (lambda fn, b: b.count("5m:*"), 1),
}


@pytest.fixture
def frozen_able(own_server):
    """A Redis of this test's own (it may be frozen), with a socket timeout
    far beyond any freeze here."""
    server = own_server()
    cachu.configure(backend="redis", redis_url=server.url, redis_socket_timeout=WAIT)
    return server


@pytest.mark.parametrize("name", list(OPERATIONS))
def test_redis_operations_never_use_the_thread_pool(frozen_able, name):
    op, expected = OPERATIONS[name]
    fn = make_fn("redis")

    async def main():
        await fn(1)  # one entry; the connection made
        b = await cachu.get_async_backend(backend="redis", ttl=300)
        return await op(fn, b)

    result, submitted = on_counted_loop(main)
    assert result == expected
    assert submitted == 0


def test_file_writes_do_use_the_thread_pool(tmp_path):
    """The count is real: a file region's writes leave the loop."""
    cachu.configure(backend="file", file_dir=str(tmp_path))
    fn = make_fn("file")

    async def main():
        await cachu.async_cache_set(fn, "v", x=1)
        return await cachu.async_cache_get(fn, x=1)

    result, submitted = on_counted_loop(main)
    assert result == "v"
    assert submitted >= 1


@pytest.mark.parametrize(
    "name",
    [
        "async_cache_get",
        "async_cache_set",
        "async_cache_clear",
        "fn.clear(x=1)",
        "AsyncBackend.count",
    ],
)
def test_the_loop_runs_while_redis_is_frozen(frozen_able, name):
    """The server is stopped (SIGSTOP) while the operation is on the wire:
    a heartbeat task keeps beating meanwhile, the operation still pending;
    once the server goes on, the operation completes, no pool thread used."""
    op, expected = OPERATIONS[name]
    fn = make_fn("redis")
    pid = frozen_able.proc.pid

    async def main():
        await fn(1)
        b = await cachu.get_async_backend(backend="redis", ttl=300)
        os.kill(pid, signal.SIGSTOP)
        try:
            pending = asyncio.ensure_future(op(fn, b))
            beats = 0
            while beats < 20:  # each beat is a turn of the loop
                await asyncio.sleep(0.005)
                beats += 1
            assert not pending.done(), "the operation did not wait for the frozen server"
        finally:
            os.kill(pid, signal.SIGCONT)
        return await pending

    result, submitted = on_counted_loop(main)
    assert result == expected
    assert submitted == 0


RAW_INPUTS = {
    "nothing": None,
    "short": b"abc",
    "empty": b"",
    "not a pickle": b"\0" * 8 + b"hello, not a pickle",
    "a list": ["x"],
}


@pytest.mark.parametrize("name", list(RAW_INPUTS))
def test_sync_and_async_faces_agree_on_what_redis_holds(frozen_able, name):
    """The same stored state read and deleted through the sync face and the
    awaitable one: the same answers, and the same left behind."""
    raw = frozen_able.client()
    key = "5m:answer|x=1"
    fn = make_fn("redis")

    def put():
        raw.delete(key)
        value = RAW_INPUTS[name]
        if isinstance(value, list):
            raw.rpush(key, *value)
        elif value is not None:
            raw.set(key, value)

    def seen(answer):
        return answer, raw.type(key)

    def operations(b, cache_get):
        """The same reads and writes, on backend object ``b``."""
        return [
            lambda: b.get(key),
            lambda: b.get_with_metadata(key),
            lambda: cache_get(fn, "d", x=1),
            lambda: b.delete(key),
            lambda: b.count("5m:*"),
        ]

    sync = []
    for op in operations(cachu.get_backend(backend="redis", ttl=300), cachu.cache_get):
        put()
        sync.append(seen(op()))

    async def main():
        b = await cachu.get_async_backend(backend="redis", ttl=300)
        out = []
        for op in operations(b, cachu.async_cache_get):
            put()
            out.append(seen(await op()))
        return out

    assert on_counted_loop(main)[0] == sync
    raw.close()


def test_async_writes_reach_the_near_cache_at_once(frozen_able):
    """With a near cache, what an async CRUD call writes, removes or clears
    is what the next call sees (the near entry goes with the write)."""
    import time

    cachu.configure(redis_near_cache=100)
    runs = []

    @cachu.cache(ttl=300, backend="redis")
    def source(x):
        runs.append(x)
        return {"run": len(runs)}

    backend = cachu.get_backend("redis", ttl=300)
    deadline = time.monotonic() + WAIT
    while not (source(1) and backend.near_size >= 1):  # tracking is up, 1 held near
        assert time.monotonic() < deadline, "never held near"
        time.sleep(0.005)

    async def main():
        await cachu.async_cache_set(source, {"run": "set"}, x=1)
        seen = [source(1)]
        b = await cachu.get_async_backend(backend="redis", ttl=300)
        await b.set(source._key(x=1), {"run": "backend set"}, 300)
        seen.append(source(1))
        await cachu.async_cache_delete(source, x=1)
        seen.append(source(1))
        assert await cachu.async_cache_get(source, x=1) == seen[-1]  # held near again
        await cachu.async_cache_clear(backend="redis", ttl=300)
        seen.append(source(1))
        return seen

    seen, submitted = on_counted_loop(main)
    assert seen[:2] == [{"run": "set"}, {"run": "backend set"}]
    assert seen[2:] == [{"run": len(runs) - 1}, {"run": len(runs)}]
    assert submitted == 0

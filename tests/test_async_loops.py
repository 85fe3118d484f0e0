"""Async caching under concurrency: dogpile prevention, cancellation, a
never-blocked event loop, several event loops and several threads (memory,
file and Redis: on Redis the key's lock is shared across loops, threads and
processes)."""

import asyncio
import threading
import time

import cachu
import pytest
from cachu.backends import NO_VALUE
from helpers import run_threads

JOIN_TIMEOUT = 30
WAIT = 10  # upper bound for waits that should end at once; only guards against hangs


@pytest.fixture(params=["memory", "file", "redis"])
def backend(request, tmp_path):
    """A backend that stores entries, made the package's default backend
    (Redis: the module's server, flushed)."""
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("server").url
        request.getfixturevalue("r")
    # A long lock timeout: a lock left behind shows up as a hang (caught by
    # the WAIT guards) rather than as a late recomputation.
    cachu.configure(backend=request.param, file_dir=str(tmp_path), redis_url=url, lock_timeout=60)
    return request.param


def stored_keys(backend, ttl=300):
    """The keys of a region (on Redis: the whole database, lock keys too)."""
    return sorted(cachu.get_backend(backend, ttl=ttl).keys())


def wait_no_locks(backend):
    """No Redis lock is left (a cancelled task's is released in the
    background: waited for, within a hang guard); nothing on other backends."""
    b = cachu.get_backend(backend, ttl=300)
    deadline = time.monotonic() + WAIT
    while b.count("lock:*") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(b.keys("lock:*")) == []


async def settle():
    """Give queued tasks time to reach the point where they wait on a key
    (file lookups first make a round trip through a worker thread)."""
    await asyncio.sleep(0.1)


@cachu.cache(ttl=300, backend="memory")
async def module_level_square(x):
    """Decorated once, at import, and used from many event loops."""
    await asyncio.sleep(0)
    return x * x


class Boom(Exception):
    pass


# --- dogpile prevention -------------------------------------------------------------


@pytest.mark.asyncio
async def test_dogpile_runs_the_function_once(backend):
    calls = []

    @cachu.cache(ttl=300)
    async def slow(key):
        calls.append(key)
        await asyncio.sleep(0.2)
        return {"key": key, "computed": len(calls)}

    results = await asyncio.wait_for(asyncio.gather(*(slow("k") for _ in range(100))), WAIT)
    assert calls == ["k"]
    assert results == [{"key": "k", "computed": 1}] * 100
    info = await cachu.async_cache_info(slow)
    assert (info.hits, info.misses, info.currsize) == (99, 1, 1)
    assert stored_keys(backend) == ["5m:slow|key='k'"]
    assert await slow("k") == {"key": "k", "computed": 1}


@pytest.mark.asyncio
async def test_dogpile_with_async_cache_and_many_keys(backend):
    calls = []

    @cachu.async_cache(ttl=300)
    async def slow(key):
        calls.append(key)
        await asyncio.sleep(0.05)
        return key.upper()

    keys = [f"k{i}" for i in range(10)]
    results = await asyncio.wait_for(
        asyncio.gather(*(slow(k) for _ in range(10) for k in keys)), WAIT
    )
    assert sorted(calls) == sorted(keys)
    assert results == [k.upper() for _ in range(10) for k in keys]
    assert stored_keys(backend) == sorted(f"5m:slow|key='{k}'" for k in keys)


@pytest.mark.asyncio
async def test_different_keys_do_not_wait_for_each_other(backend):
    # 'a' can only finish after 'b' has run: if a miss on 'a' held up 'b',
    # this would hang.
    b_ran = asyncio.Event()

    @cachu.cache(ttl=300)
    async def linked(key):
        if key == "a":
            await b_ran.wait()
        else:
            b_ran.set()
        return key

    first = asyncio.create_task(linked("a"))
    await settle()
    assert await asyncio.wait_for(linked("b"), WAIT) == "b"
    assert await asyncio.wait_for(first, WAIT) == "a"


@pytest.mark.asyncio
async def test_overwrite_cache_during_a_computation(backend):
    gate = asyncio.Event()
    calls = []

    @cachu.cache(ttl=300)
    async def fn(key):
        calls.append(key)
        if len(calls) == 1:
            await gate.wait()
        return len(calls)

    async def until(condition):
        # Polled on the loop: the file lookup runs in a worker thread first.
        async def poll():
            while not condition():
                await asyncio.sleep(0.005)

        await asyncio.wait_for(poll(), WAIT)

    computing = asyncio.create_task(fn("k"))
    await until(lambda: len(calls) == 1)
    forced = asyncio.create_task(fn("k", _overwrite_cache=True))
    # Whether the overwrite is then waiting for the key's lock (memory,
    # file) or already running (Redis), the outcome below is the same.
    await settle()
    gate.set()
    assert await asyncio.wait_for(computing, WAIT) in (1, 2)
    assert await asyncio.wait_for(forced, WAIT) == 2
    assert len(calls) == 2
    assert await fn("k") in (1, 2)


# --- cancellation ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancelled_waiter_does_not_break_the_others(backend):
    started = asyncio.Event()
    gate = asyncio.Event()
    calls = []

    @cachu.cache(ttl=300)
    async def guarded(key):
        calls.append(key)
        started.set()
        await gate.wait()
        return f"value-{len(calls)}"

    computer = asyncio.create_task(guarded("k"))
    await asyncio.wait_for(started.wait(), WAIT)
    waiters = [asyncio.create_task(guarded("k")) for _ in range(10)]
    await settle()
    for task in waiters[:4]:
        task.cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.wait_for(
        asyncio.gather(computer, *waiters, return_exceptions=True), WAIT
    )
    assert results[0] == "value-1"
    assert all(isinstance(r, asyncio.CancelledError) for r in results[1:5]), results[1:5]
    assert results[5:] == ["value-1"] * 6
    assert calls == ["k"]
    assert await guarded("k") == "value-1"
    assert stored_keys(backend) == ["5m:guarded|key='k'"]


@pytest.mark.asyncio
async def test_all_waiters_cancelled_computation_still_stores(backend):
    started = asyncio.Event()
    gate = asyncio.Event()

    @cachu.cache(ttl=300)
    async def guarded(key):
        started.set()
        await gate.wait()
        return "done"

    computer = asyncio.create_task(guarded("k"))
    await asyncio.wait_for(started.wait(), WAIT)
    waiters = [asyncio.create_task(guarded("k")) for _ in range(5)]
    await settle()
    for task in waiters:
        task.cancel()
    gate.set()
    assert await asyncio.wait_for(computer, WAIT) == "done"
    for task in waiters:
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await guarded.get(key="k") == "done"


@pytest.mark.asyncio
async def test_cancelled_computation_releases_the_lock_to_a_waiter(backend):
    first_started = asyncio.Event()
    calls = []

    @cachu.cache(ttl=300)
    async def compute(key):
        calls.append(key)
        if len(calls) == 1:
            first_started.set()
            await asyncio.Event().wait()  # never finishes: will be cancelled
        await asyncio.sleep(0.01)
        return f"value-{len(calls)}"

    computer = asyncio.create_task(compute("k"))
    await asyncio.wait_for(first_started.wait(), WAIT)
    waiters = [asyncio.create_task(compute("k")) for _ in range(10)]
    await settle()
    computer.cancel()
    results = await asyncio.wait_for(asyncio.gather(*waiters), WAIT)
    with pytest.raises(asyncio.CancelledError):
        await computer
    assert calls == ["k", "k"]
    assert results == ["value-2"] * 10
    assert await compute.get(key="k") == "value-2"
    assert stored_keys(backend) == ["5m:compute|key='k'"]


@pytest.mark.asyncio
async def test_cancelled_computation_stores_nothing_and_next_caller_computes(backend):
    calls = []

    started = asyncio.Event()

    @cachu.cache(ttl=300)
    async def compute(key):
        calls.append(key)
        if len(calls) == 1:
            started.set()
            await asyncio.sleep(60)  # cancelled long before
        return f"value-{len(calls)}"

    # Cancelled once it computes (not at a fixed time: the lookup before it
    # may take a while on a loaded machine).
    task = asyncio.create_task(compute("k"))
    await asyncio.wait_for(started.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    wait_no_locks(backend)
    assert await compute.get(default=None, key="k") is None
    ab = await cachu.get_async_backend(backend, ttl=300)
    assert await ab.count() == 0
    assert await ab.get_with_metadata("5m:compute|key='k'") == (NO_VALUE, None)
    info = await cachu.async_cache_info(compute)
    assert info.currsize == 0
    # the key is free again: the next caller computes at once
    assert await asyncio.wait_for(compute("k"), WAIT) == "value-2"
    assert await compute("k") == "value-2"
    assert calls == ["k", "k"]


@pytest.mark.asyncio
async def test_failed_computation_lets_a_waiter_compute(backend):
    started = asyncio.Event()
    gate = asyncio.Event()
    calls = []

    @cachu.cache(ttl=300)
    async def fragile(key):
        calls.append(key)
        if len(calls) == 1:
            started.set()
            await gate.wait()
            raise Boom("first")
        return "recovered"

    failing = asyncio.create_task(fragile("k"))
    await asyncio.wait_for(started.wait(), WAIT)
    waiters = [asyncio.create_task(fragile("k")) for _ in range(5)]
    await settle()
    gate.set()
    with pytest.raises(Boom):
        await asyncio.wait_for(failing, WAIT)
    assert await asyncio.wait_for(asyncio.gather(*waiters), WAIT) == ["recovered"] * 5
    assert calls == ["k", "k"]


@pytest.mark.asyncio
async def test_waiter_gives_up_after_lock_timeout(backend):
    cachu.configure(lock_timeout=0.2)
    started = asyncio.Event()
    gate = asyncio.Event()
    calls = []

    @cachu.cache(ttl=300)
    async def held(key):
        calls.append(key)
        if len(calls) == 1:
            started.set()
            await gate.wait()
            return "slow"
        return "impatient"

    holder = asyncio.create_task(held("k"))
    await asyncio.wait_for(started.wait(), WAIT)
    assert await asyncio.wait_for(held("k"), WAIT) == "impatient"
    gate.set()
    assert await asyncio.wait_for(holder, WAIT) == "slow"
    assert calls == ["k", "k"]


# --- the event loop is never blocked ------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("slow_backend", ["memory", "file"])
async def test_event_loop_is_never_blocked(tmp_path, slow_backend):
    cachu.configure(file_dir=str(tmp_path))
    slow_calls = []

    @cachu.cache(ttl=300, backend=slow_backend)
    async def slow(key):
        slow_calls.append(key)
        await asyncio.sleep(0.3)
        return key

    @cachu.cache(ttl=300, backend="file")
    async def on_file(i):
        return {"i": i, "payload": "x" * 500}

    @cachu.cache(ttl=300, backend="memory")
    async def on_memory(i):
        return {"i": i, "payload": list(range(50))}

    for i in range(20):
        await on_file(i)
        await on_memory(i)

    loop = asyncio.get_running_loop()
    stop = loop.time() + 1.0
    lateness = []
    done = {"file": 0, "memory": 0, "written": 0}

    async def heartbeat():
        while loop.time() < stop:
            before = loop.time()
            await asyncio.sleep(0.005)
            lateness.append(loop.time() - before - 0.005)

    async def file_hitter(i):
        while loop.time() < stop:
            assert (await on_file(i % 20))["i"] == i % 20
            done["file"] += 1
            i += 1
            await asyncio.sleep(0)  # a file hit runs inline too: it never suspends

    async def memory_hitter(i):
        while loop.time() < stop:
            assert (await on_memory(i % 20))["i"] == i % 20
            done["memory"] += 1
            i += 1
            await asyncio.sleep(0)  # a memory hit finishes without suspending

    async def file_writer(start):
        i = start
        while loop.time() < stop:
            await on_file(i)  # a miss: computed and written to SQLite
            done["written"] += 1
            i += 1

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    workers = [asyncio.create_task(slow("k")) for _ in range(100)]
    workers += [asyncio.create_task(file_hitter(n)) for n in range(8)]
    workers += [asyncio.create_task(memory_hitter(n)) for n in range(8)]
    workers += [asyncio.create_task(file_writer(1000 * (n + 1))) for n in range(2)]
    results = await asyncio.wait_for(asyncio.gather(*workers), WAIT)
    await asyncio.wait_for(beat, WAIT)

    assert results[:100] == ["k"] * 100
    assert slow_calls == ["k"]
    assert done["file"] > 0 and done["memory"] > 0 and done["written"] > 0
    assert len(lateness) >= 20


# A peer process that takes the database's write lock, says "locked", and
# lets go when told (or after 30 s, should the test never tell it).
_LOCK_HOLDER = """
import sqlite3, sys, threading
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
done.wait(30)
conn.execute("COMMIT")
"""


@pytest.mark.asyncio
async def test_file_store_waiting_on_a_locked_database_leaves_the_loop_free(tmp_path):
    """Another process holds the SQLite write lock, so storing a miss waits
    (SQLite's busy handler) until it lets go. While it waits, the event loop
    keeps running other tasks: the wait is in a worker thread. A store made on
    the loop's thread would stop every task until the lock came free."""
    import subprocess
    import sys

    cachu.configure(file_dir=str(tmp_path))
    phase = {"body_done": False, "returned": False}

    @cachu.cache(ttl=300, backend="file")
    async def compute(i):
        phase["body_done"] = True
        return {"i": i}

    await compute(0)  # the database exists
    (db,) = tmp_path.glob("*.db")
    phase["body_done"] = False
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCK_HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        beats_while_storing = 0
        enough = asyncio.Event()

        async def heartbeat():
            nonlocal beats_while_storing
            while not phase["returned"]:
                if phase["body_done"]:
                    beats_while_storing += 1
                    if beats_while_storing >= 3:
                        enough.set()
                await asyncio.sleep(0.01)

        async def call():
            try:
                return await compute(1)
            finally:
                phase["returned"] = True

        beat = asyncio.create_task(heartbeat())
        miss = asyncio.create_task(call())
        # Other tasks run while the store waits on the lock...
        await asyncio.wait_for(enough.wait(), WAIT)
        assert not phase["returned"]
        # ...and once the peer lets go, the store completes.
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert await asyncio.wait_for(miss, WAIT) == {"i": 1}
        await asyncio.wait_for(beat, WAIT)
    finally:
        holder.stdin.close()
        holder.wait(WAIT)
        holder.stdout.close()
    assert await compute.get(i=1) == {"i": 1}


# --- event loops and threads -----------------------------------------------------------------


def test_works_under_asyncio_run(backend):
    calls = []

    @cachu.cache(ttl=300)
    async def fetch(x):
        calls.append(x)
        return {"x": x}

    assert asyncio.run(fetch(1)) == {"x": 1}
    assert asyncio.run(fetch(1)) == {"x": 1}
    assert calls == [1]
    assert asyncio.run(fetch.get(x=1)) == {"x": 1}
    asyncio.run(fetch.set("set", x=2))
    assert asyncio.run(fetch(2)) == "set"
    info = asyncio.run(cachu.async_cache_info(fetch))
    assert (info.hits, info.misses, info.currsize) == (2, 1, 2)

    async def clear():
        # awaited from this module's code, so the caller's package is found
        return await cachu.async_cache_clear(backend=backend, ttl=300)

    assert asyncio.run(clear()) == 2
    assert asyncio.run(fetch.get(default=None, x=1)) is None


def test_module_level_function_under_asyncio_run():
    assert asyncio.run(module_level_square(4)) == 16
    assert asyncio.run(module_level_square.get(x=4)) == 16


@pytest.mark.asyncio
async def test_module_level_function_in_a_pytest_asyncio_loop():
    assert await module_level_square(5) == 25
    assert await module_level_square.get(x=5) == 25


@pytest.mark.asyncio
async def test_module_level_function_in_another_pytest_asyncio_loop():
    assert await module_level_square.get(default=None, x=5) is None  # reset between tests
    results = await asyncio.gather(*(module_level_square(5) for _ in range(20)))
    assert results == [25] * 20


def test_several_event_loops_one_after_another(backend):
    calls = []

    @cachu.cache(ttl=300)
    async def fetch(key):
        calls.append(key)
        await asyncio.sleep(0.05)
        return f"{key}-{len(calls)}"

    async def round_(n):
        shared = await asyncio.gather(*(fetch("shared") for _ in range(20)))
        own = await asyncio.gather(*(fetch(f"loop{n}") for _ in range(20)))
        return shared, own

    for n in range(3):
        shared, own = asyncio.run(round_(n))
        assert shared == ["shared-1"] * 20
        assert len(set(own)) == 1
    assert calls == ["shared", "loop0", "loop1", "loop2"]
    assert asyncio.run(fetch.get(key="loop1")) == "loop1-3"
    info = asyncio.run(cachu.async_cache_info(fetch))
    assert (info.misses, info.currsize) == (4, 4)
    wait_no_locks(backend)


def test_loop_closed_during_a_computation_leaves_the_key_free(backend):
    calls = []

    started = threading.Event()

    @cachu.cache(ttl=300)
    async def fetch(key):
        calls.append(key)
        if len(calls) == 1:
            started.set()
            await asyncio.sleep(60)
        return len(calls)

    async def abandon():
        asyncio.get_running_loop().create_task(fetch("k"))
        deadline = time.monotonic() + WAIT
        while not started.is_set():  # the computation runs
            assert time.monotonic() < deadline, "the computation never started"
            await asyncio.sleep(0.01)
        # asyncio.run cancels the still-running computation on the way out

    asyncio.run(abandon())
    assert calls == ["k"]
    assert asyncio.run(fetch.get(default=None, key="k")) is None
    wait_no_locks(backend)
    assert stored_keys(backend) == []
    assert asyncio.run(asyncio.wait_for(fetch("k"), WAIT)) == 2
    assert asyncio.run(fetch("k")) == 2


def test_threads_each_running_their_own_loop(backend):
    lock = threading.Lock()
    calls = []
    computed = set()

    @cachu.cache(ttl=300)
    async def fetch(key):
        value = f"{key}:{threading.get_ident()}"
        with lock:
            calls.append((key, threading.get_ident()))
            computed.add(value)
        await asyncio.sleep(0.1)
        return value

    n_threads = 4
    barrier = threading.Barrier(n_threads)
    results = [None] * n_threads
    idents = [None] * n_threads

    async def main(t):
        shared = await asyncio.gather(*(fetch("shared") for _ in range(25)))
        own = await asyncio.gather(*(fetch(f"thread{t}") for _ in range(10)))
        return shared, own

    def worker(t):
        def run():
            idents[t] = threading.get_ident()
            barrier.wait(JOIN_TIMEOUT)
            results[t] = asyncio.run(main(t))

        return run

    run_threads([worker(t) for t in range(n_threads)])

    shared_calls = [ident for key, ident in calls if key == "shared"]
    # within one loop, one computation serves every task of that loop; on
    # Redis the key's lock is shared by every loop: one in all
    assert len(shared_calls) == len(set(shared_calls))
    assert 1 <= len(shared_calls) <= (1 if backend == "redis" else n_threads)
    for t, (shared, own) in enumerate(results):
        assert len(shared) == 25
        # a waiter may read what another thread's loop stored last
        assert set(shared) <= computed, shared
        assert own == [f"thread{t}:{idents[t]}"] * 10
    assert sorted(key for key, _ in calls if key != "shared") == [
        f"thread{t}" for t in range(n_threads)
    ]
    assert asyncio.run(fetch("shared")) in computed
    assert len(stored_keys(backend)) == 1 + n_threads

"""Async caching on the Redis backend, against a real ``redis-server``.

The memory and file versions of these tests are in test_async.py and
test_async_loops.py. Here every async decorator option, helper, CRUD
function and AsyncBackend method runs with ``backend='redis'``, and the
natively async Redis path (one round trip to read or take ``lock:{key}``,
suspended polling while another client holds it, store-and-unlock in one
round trip) is checked under concurrency, cancellation, several processes,
several event loops and threads, and outages.

A module-wide server (127.0.0.1, free port, nothing persisted) is flushed
before every test; outage tests start servers of their own. A raw redis-py
client plays the peer: it reads what cachu wrote and writes entries and
locks the way the reference (pure-Python cachu 0.2.7) does:

    value = struct.pack('d', created_at) + pickle.dumps(result), via SETEX
    lock  = SET lock:{mangled key} <token> NX EX int(lock_timeout)

The package's ``lock_timeout`` is 30 s unless a test says otherwise, so a
lock left behind shows up as a long wait, which the ``WAIT`` guards (10 s)
turn into failures.
"""

import asyncio
import json
import pickle
import struct
import subprocess
import sys
import time

import cachu
import pytest
from cachu.decorator import clear_backends
from redis_raw import assert_no_locks, put_raw, raw_keys, read_raw
from redis_server import free_port

LOCK_TIMEOUT = 30
WAIT = 10  # guards waits that should end long before it; only catches hangs
JOIN_TIMEOUT = 30
PICKLE_ERRORS = (TypeError, pickle.PicklingError, AttributeError)


# -- servers and helpers ---------------------------------------------------------


@pytest.fixture(autouse=True)
def on_module_server(server, r):
    """Point this module's package at the module server, with a long lock
    timeout. At teardown cachu's instances are forgotten without clearing
    them (the next test flushes the database), since some tests leave their
    own server down."""
    cachu.configure(redis_url=server.url, lock_timeout=LOCK_TIMEOUT)
    yield
    clear_backends()


async def wait_until(predicate, timeout, what):
    """Poll ``predicate`` every 10 ms; the seconds it took to become true,
    or a failure after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - t0


async def wait_no_locks(r, timeout=1.0):
    """A released lock is deleted in the background: wait for it."""
    return await wait_until(lambda: not raw_keys(r, "lock:*"), timeout, "lock:* still present")


class Boom(Exception):
    pass


@cachu.cache(ttl=300, backend="redis")
async def module_level_cube(x):
    """Decorated once, at import, and used from several event loops."""
    await asyncio.sleep(0)
    return x**3


# -- decorator options ---------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::cachu.CacheKeyCollisionWarning")  # same name on purpose
@pytest.mark.asyncio
async def test_keys_and_bytes_identical_to_the_sync_path(r):
    """The same function, decorated sync and async, writes the same keys,
    the same bytes (after the 8-byte created_at) and the same TTL."""
    cachu.configure(key_prefix="v1:")
    result = {"id": 5, "nested": [1, (2, 3)], "f": 0.1}

    def make_sync():
        @cachu.cache(ttl=3600, backend="redis", tag="users", exclude={"log"})
        def record(user_id, kind="plain", *more, log=None, flag=False, **extra):
            return result

        return record

    def make_async():
        @cachu.cache(ttl=3600, backend="redis", tag="users", exclude={"log"})
        async def record(user_id, kind="plain", *more, log=None, flag=False, **extra):
            return result

        return record

    calls = [
        ((5,), {}),
        ((5, "full", 1, 2), {"flag": True, "x": "y"}),
        ((), {"user_id": 6, "log": object(), "_trace": 1}),
    ]
    expected = [
        "1h:v1:record||users||flag=True kind='full' user_id=5 vararg1=1 vararg2=2 x='y'",
        "1h:v1:record||users||kind='plain' user_id=5",
        "1h:v1:record||users||kind='plain' user_id=6",
    ]
    sync_fn, async_fn = make_sync(), make_async()

    def layout():
        out = {}
        for key in raw_keys(r):
            raw = r.get(key)
            out[key] = (len(raw), struct.unpack("d", raw[:8])[0], raw[8:], r.pttl(key))
        return out

    t0 = time.time()
    for args, kwargs in calls:
        sync_fn(*args, **kwargs)
    sync_layout = layout()
    r.flushdb()
    for args, kwargs in calls:
        await async_fn(*args, **kwargs)
    async_layout = layout()
    t1 = time.time()

    assert sorted(sync_layout) == expected
    assert sorted(async_layout) == expected
    for key in expected:
        s_len, s_created, s_pickle, s_pttl = sync_layout[key]
        a_len, a_created, a_pickle, a_pttl = async_layout[key]
        assert a_pickle == s_pickle == pickle.dumps(result)
        assert a_len == s_len == 8 + len(pickle.dumps(result))
        assert t0 - 0.5 <= s_created <= a_created <= t1 + 0.5
        assert 3597_000 < a_pttl <= 3600_000 and 3597_000 < s_pttl <= 3600_000
    assert_no_locks(r)


@pytest.mark.asyncio
async def test_package_option_uses_that_packages_config(server, r):
    cachu.configure(package="otherpkg", redis_url=server.url, key_prefix="o:")
    cachu.configure(key_prefix="mine:")

    @cachu.cache(ttl=300, backend="redis", package="otherpkg")
    async def theirs(n):
        return n

    @cachu.async_cache(ttl=300, backend="redis")
    async def ours(n):
        return n

    await theirs(1)
    await ours(1)
    assert raw_keys(r) == ["5m:mine:ours|n=1", "5m:o:theirs|n=1"]
    assert await cachu.async_cache_clear(backend="redis", ttl=300, package="otherpkg") == 1
    assert raw_keys(r) == ["5m:mine:ours|n=1"]


@pytest.mark.asyncio
async def test_validate_sees_the_created_at_of_a_peer_written_entry(r):
    """An entry written by a peer in the reference layout is validated with
    its own created_at (the rest of validate: test_behaviour_calls.py)."""
    seen = []
    calls = []

    def check(entry):
        seen.append(entry)
        return True

    @cachu.cache(ttl=300, backend="redis", validate=check)
    async def priced(symbol):
        calls.append(symbol)
        return {"symbol": symbol}

    peer_created = time.time() - 1000.25
    put_raw(r, "5m:priced|symbol='Y'", {"from": "peer"}, created_at=peer_created)
    assert await priced("Y") == {"from": "peer"}
    assert seen[-1].created_at == peer_created
    assert 999 < seen[-1].age < 1010
    assert calls == []
    await wait_no_locks(r)


@pytest.mark.asyncio
async def test_async_backend_reads_reference_written_metadata(r):
    """A peer's entry, read with its exact created_at (the rest of the
    backend objects: test_behaviour_backend_objects.py)."""
    ab = await cachu.get_async_backend("redis", ttl=300)
    put_raw(r, "5m:peer|k=1", ["peer"], created_at=1_700_000_000.125)
    assert await ab.get_with_metadata("5m:peer|k=1") == (["peer"], 1_700_000_000.125)
    assert await ab.aget("5m:peer|k=1") == ["peer"]


@pytest.mark.asyncio
async def test_clear_async_backends_keeps_redis_entries(r):
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def kept(n):
        calls.append(n)
        return n

    await kept(1)
    assert await cachu.clear_async_backends() is None
    assert raw_keys(r) == ["5m:kept|n=1"]
    assert await kept(1) == 1  # a new instance reads the stored entry
    assert calls == [1]


# -- sync and async share entries ------------------------------------------------------


@pytest.mark.filterwarnings("ignore::cachu.CacheKeyCollisionWarning")  # same name on purpose
@pytest.mark.asyncio
async def test_sync_and_async_share_entries_both_ways(r):
    calls = []

    def make_sync():
        @cachu.cache(ttl=300, backend="redis")
        def shared(n):
            calls.append(("sync", n))
            return {"n": n, "by": "sync"}

        return shared

    def make_async():
        @cachu.cache(ttl=300, backend="redis")
        async def shared(n):
            calls.append(("async", n))
            return {"n": n, "by": "async"}

        return shared

    sync_fn, async_fn = make_sync(), make_async()
    # sync decorated call -> async hit
    assert sync_fn(1) == {"n": 1, "by": "sync"}
    assert await async_fn(1) == {"n": 1, "by": "sync"}
    # sync cache_set / .set -> async hit
    cachu.cache_set(sync_fn, {"n": 2, "by": "cache_set"}, n=2)
    assert await async_fn(2) == {"n": 2, "by": "cache_set"}
    sync_fn.set({"n": 3, "by": "sync .set"}, n=3)
    assert await async_fn(n=3) == {"n": 3, "by": "sync .set"}
    # async decorated call -> sync cache_get and sync hit
    assert await async_fn(4) == {"n": 4, "by": "async"}
    assert cachu.cache_get(sync_fn, n=4) == {"n": 4, "by": "async"}
    assert cachu.cache_get(async_fn, n=4) == {"n": 4, "by": "async"}
    assert await cachu.async_cache_get(sync_fn, n=4) == {"n": 4, "by": "async"}
    assert sync_fn(4) == {"n": 4, "by": "async"}
    # async CRUD -> sync
    await cachu.async_cache_set(async_fn, {"n": 5, "by": "async_cache_set"}, n=5)
    assert sync_fn(5) == {"n": 5, "by": "async_cache_set"}
    await cachu.async_cache_delete(async_fn, n=5)
    assert cachu.cache_get(sync_fn, n=5, default=None) is None
    assert calls == [("sync", 1), ("async", 4)]
    assert raw_keys(r) == [f"5m:shared|n={n}" for n in (1, 2, 3, 4)]
    assert_no_locks(r)


# -- locks held by others ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_lock_is_taken_with_the_reference_layout_while_computing(r):
    started = asyncio.Event()
    gate = asyncio.Event()

    @cachu.cache(ttl=300, backend="redis")
    async def held(n):
        started.set()
        await gate.wait()
        return n

    task = asyncio.create_task(held(1))
    await asyncio.wait_for(started.wait(), WAIT)
    lock = "lock:5m:held|n=1"
    assert raw_keys(r) == [lock]
    token = r.get(lock)
    assert token
    assert LOCK_TIMEOUT - 2 <= r.ttl(lock) <= LOCK_TIMEOUT
    # a peer's SET NX on the same lock fails while we hold it
    assert r.set(lock, "peer", nx=True, ex=5) is None
    gate.set()
    assert await asyncio.wait_for(task, WAIT) == 1
    assert raw_keys(r) == ["5m:held|n=1"]  # stored and unlocked in one go


# -- the event loop is never blocked -----------------------------------------------------


@pytest.mark.asyncio
async def test_event_loop_is_never_blocked(r):
    slow_calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def slow(key):
        slow_calls.append(key)
        await asyncio.sleep(0.3)
        return key

    @cachu.cache(ttl=300, backend="redis")
    async def hot(i):
        return {"i": i, "payload": "x" * 500}

    for i in range(20):
        await hot(i)

    loop = asyncio.get_running_loop()
    stop = loop.time() + 1.0
    lateness = []
    done = {"hits": 0, "written": 0}

    async def heartbeat():
        while loop.time() < stop:
            before = loop.time()
            await asyncio.sleep(0.005)
            lateness.append(loop.time() - before - 0.005)

    async def hitter(i):
        while loop.time() < stop:
            assert (await hot(i % 20))["i"] == i % 20
            done["hits"] += 1
            i += 1

    async def writer(i):
        while loop.time() < stop:
            await hot(i)  # a miss: lock, compute, store and unlock
            done["written"] += 1
            i += 1

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0)
    workers = [asyncio.create_task(slow("k")) for _ in range(100)]
    workers += [asyncio.create_task(hitter(n)) for n in range(8)]
    workers += [asyncio.create_task(writer(1000 * (n + 1))) for n in range(2)]
    results = await asyncio.wait_for(asyncio.gather(*workers), WAIT)
    await asyncio.wait_for(beat, WAIT)

    assert results[:100] == ["k"] * 100
    assert slow_calls == ["k"]
    assert done["hits"] > 50 and done["written"] > 5, done
    assert len(lateness) >= 20


# -- dogpile prevention ----------------------------------------------------------------------


CHILD = """
import asyncio, json, os, sys, time, traceback

import cachu
import redis

PKG = "adogpile"
url, start, tasks, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cachu.configure(redis_url=url, package=PKG, fail_open=False, lock_timeout=30)
peer = redis.Redis.from_url(url)


@cachu.cache(ttl=300, backend="redis", package=PKG)
async def slow_answer(n):
    peer.incr("adogpile:runs")
    await asyncio.sleep(0.5)
    return {"n": n, "computed_by": os.getpid()}


async def one():
    t0 = time.monotonic()
    value = await slow_answer(7)
    return value, time.monotonic() - t0


async def main():
    delay = start - time.time()
    if delay > 0:
        await asyncio.sleep(delay)
    outcomes = await asyncio.gather(*(one() for _ in range(tasks)), return_exceptions=True)
    report = {"results": [], "elapsed": [], "errors": []}
    for o in outcomes:
        if isinstance(o, BaseException):
            report["errors"].append("".join(traceback.format_exception(o)))
        else:
            report["results"].append(o[0])
            report["elapsed"].append(o[1])
    with open(out, "w") as f:
        json.dump(report, f)


asyncio.run(main())
# Leave without interpreter finalization: a crash at exit is the subject of
# test_process_exits_cleanly_after_async_redis_calls, not of this test.
sys.stdout.flush()
os._exit(0)
"""


def run_children(argv_list, timeout=60):
    """Start one child per argv at once; wait for all of them (killing the
    rest if one hangs). Returns ``[(returncode, stdout, stderr), ...]``."""
    children = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in argv_list
    ]
    outcomes = []
    try:
        for child in children:
            stdout, stderr = child.communicate(timeout=timeout)
            outcomes.append((child.returncode, stdout, stderr))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.communicate()
    return outcomes


def test_dogpile_across_two_processes(server, r, tmp_path):
    """2 processes x 50 tasks, each process on its own event loop, call one
    missing key at the same moment: the function runs once in total."""
    script = tmp_path / "adogpile_child.py"
    script.write_text(CHILD)
    start = time.time() + 2.0
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    outcomes = run_children(
        [[sys.executable, str(script), server.url, repr(start), "50", str(out)] for out in outs]
    )
    for code, stdout, stderr in outcomes:
        assert code == 0, f"child failed ({code}):\n{stdout}\n{stderr}"
    assert time.time() >= start, "children finished before the start time: too slow to start"

    reports = [json.loads(out.read_text()) for out in outs]
    assert [e for rep in reports for e in rep["errors"]] == []
    results = [res for rep in reports for res in rep["results"]]
    assert len(results) == 100
    assert int(r.get("adogpile:runs")) == 1
    assert all(res == results[0] for res in results), results
    assert results[0]["n"] == 7
    raw = r.get("5m:slow_answer|n=7")
    assert pickle.loads(raw[8:]) == results[0]
    assert raw_keys(r, "lock:*") == []


EXIT_CHILD = """
import asyncio, sys, threading, time

import cachu

url, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cachu.configure(redis_url=url, package="aexit")


@cachu.cache(ttl=300, backend="redis", package="aexit")
async def answer(n):
    return n * 2


async def once():
    assert await answer(n) == 2 * n  # a miss: computed and stored
    print("ok", flush=True)


async def busy():
    async def hit(i):
        while True:
            assert await answer(i % 10) == 2 * (i % 10)

    await asyncio.gather(*(hit(i) for i in range(100)))


if mode == "once":
    asyncio.run(once())
else:
    # daemon threads, each on its own loop, still making cached calls when
    # the main thread ends
    for _ in range(2):
        threading.Thread(target=asyncio.run, args=(busy(),), daemon=True).start()
    time.sleep(0.2)
    print("ok", flush=True)
"""


@pytest.mark.parametrize(("mode", "batches"), [("once", 2), ("busy", 3)], ids=["once", "busy"])
def test_process_exits_cleanly_after_async_redis_calls(server, r, tmp_path, mode, batches):
    """A script whose async Redis calls are done (``once``: one call under
    asyncio.run, then the end of the script), or still going on in daemon
    threads (``busy``), must exit with status 0 when its main thread ends,
    as it does with the sync API. Several runs, 4 at a time."""
    script = tmp_path / "aexit_child.py"
    script.write_text(EXIT_CHILD)
    outcomes = []
    for batch in range(batches):
        outcomes += run_children(
            [[sys.executable, str(script), server.url, mode, str(4 * batch + i)] for i in range(4)]
        )
    assert all(out == "ok\n" for _, out, _ in outcomes), outcomes  # the work was done
    codes = [code for code, _, _ in outcomes]
    errs = [err[-300:] for code, _, err in outcomes if code]
    assert codes == [0] * len(codes), f"exit statuses {codes} (-6 is SIGABRT); stderr: {errs}"


# -- cancellation --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_timed_out_computation_releases_the_lock(r):
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def compute(key):
        calls.append(key)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return f"value-{len(calls)}"

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(compute("k"), 0.2)
    await wait_no_locks(r, timeout=1.0)
    assert raw_keys(r) == []
    assert await asyncio.wait_for(compute("k"), WAIT) == "value-2"


@pytest.mark.asyncio
@pytest.mark.parametrize("ending", ["cancelled", "raised"])
async def test_waiters_of_a_holder_that_stores_nothing(r, ending):
    """The lock holder is cancelled, or raises, while 10 tasks poll for its
    value. They must not wait for the lock timeout (30 s), must never see
    the abandoned value, and, as on memory and file (test_async_loops.py)
    and per COMPAT.md ("concurrent callers of one missing key run the
    function once"), exactly one of them computes the key again."""
    started = asyncio.Event()
    gate = asyncio.Event()
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def compute(key):
        calls.append(key)
        if len(calls) == 1:
            started.set()
            await gate.wait()
            if ending == "raised":
                raise Boom("holder failed")
            return "abandoned-value"
        await asyncio.sleep(0.05)
        return f"value-{len(calls)}"

    holder = asyncio.create_task(compute("k"))
    await asyncio.wait_for(started.wait(), WAIT)
    waiters = [asyncio.create_task(compute("k")) for _ in range(10)]
    await asyncio.sleep(0.1)  # every waiter is polling by now
    if ending == "cancelled":
        holder.cancel()
    else:
        gate.set()
    results = await asyncio.wait_for(asyncio.gather(*waiters), WAIT)
    with pytest.raises(asyncio.CancelledError if ending == "cancelled" else Boom):
        await holder
    assert "abandoned-value" not in results
    await wait_no_locks(r)
    assert calls == ["k", "k"], f"{len(calls) - 1} waiters recomputed the key"
    assert results == ["value-2"] * 10
    assert read_raw(r, "5m:compute|key='k'")[1] == "value-2"


@pytest.mark.asyncio
async def test_tasks_cancelled_while_taking_the_lock_leave_it_free(r):
    """Cancelled while their first round trip (read or take the lock) is in
    flight: whichever of them won the lock must release it."""
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def fetch(key):
        calls.append(key)
        return key

    tasks = [asyncio.create_task(fetch("k")) for _ in range(20)]
    await asyncio.sleep(0)  # each has sent its round trip
    for t in tasks:
        t.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes), outcomes
    await wait_no_locks(r, timeout=1.0)
    assert await asyncio.wait_for(fetch("k"), WAIT) == "k"
    assert calls == ["k"]
    assert raw_keys(r) == ["5m:fetch|key='k'"]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_exception_propagates_and_releases_the_lock(r):
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def fragile(n):
        calls.append(n)
        await asyncio.sleep(0)
        if len(calls) == 1:
            raise Boom("first")
        return "recovered"

    with pytest.raises(Boom, match="first"):
        await fragile(1)
    assert raw_keys(r, "5m:*") == []
    await wait_no_locks(r, timeout=1.0)
    assert await asyncio.wait_for(fragile(1), WAIT) == "recovered"
    assert calls == [1, 1]
    assert read_raw(r, "5m:fragile|n=1")[1] == "recovered"


@pytest.mark.asyncio
@pytest.mark.parametrize("where", ["cache_if", "ttl", "validate"])
async def test_exceptions_from_callbacks_propagate_and_release_the_lock(r, where):
    armed = {"on": True}

    def hook(*_):
        if armed["on"]:
            raise Boom(where)
        return True

    opts = {"cache_if": hook} if where == "cache_if" else {}
    if where == "ttl":
        opts["ttl"] = lambda res: hook() and 300
    else:
        opts["ttl"] = 300
    if where == "validate":
        opts["validate"] = hook
    calls = []

    @cachu.cache(backend="redis", **opts)
    async def cb(n):
        calls.append(n)
        return n

    region = "-1s" if where == "ttl" else "5m"
    key = f"{region}:cb|n=1"
    if where == "validate":
        put_raw(r, key, "stored")  # validate only runs on a stored value
    with pytest.raises(Boom, match=where):
        await cb(1)
    await wait_no_locks(r, timeout=1.0)
    if where == "validate":
        assert read_raw(r, key)[1] == "stored"
    else:
        assert raw_keys(r) == []
    armed["on"] = False
    assert await asyncio.wait_for(cb(1), WAIT) == ("stored" if where == "validate" else 1)
    assert raw_keys(r) == [key]


# -- outages -----------------------------------------------------------------------------------


async def until_cached(peer, key, call, expected):
    """Call until the value is stored: after an outage, caching resumes once
    the circuit breaker's back-off lets a probe through."""
    end = time.monotonic() + 10
    while not peer.exists(key):
        assert time.monotonic() < end, "caching did not resume"
        assert await asyncio.wait_for(call(), WAIT) == expected
        await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_outage_fails_open_and_caching_resumes(own_server):
    srv = own_server()
    cachu.configure(redis_url=srv.url, redis_socket_timeout=0.5)
    peer = srv.client()
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def resilient(n):
        calls.append(n)
        return n * 10

    assert await resilient(1) == 10
    assert await resilient(1) == 10
    assert calls == [1]

    srv.stop()
    for _ in range(5):
        assert await asyncio.wait_for(resilient(1), WAIT) == 10
    assert calls == [1] * 6
    results = await asyncio.wait_for(asyncio.gather(*(resilient(2) for _ in range(20))), WAIT)
    assert results == [20] * 20
    assert calls == [1] * 6 + [2] * 20
    # the helpers are not decorated calls: they report the outage
    with pytest.raises(cachu.CacheError):
        await asyncio.wait_for(resilient.get(n=1), WAIT)
    with pytest.raises(cachu.CacheError):
        await asyncio.wait_for(cachu.async_cache_set(resilient, 5, n=1), WAIT)

    srv.start()
    await until_cached(peer, "5m:resilient|n=3", lambda: resilient(3), 30)
    del calls[:]
    assert await asyncio.wait_for(resilient(3), WAIT) == 30  # hit
    assert calls == []
    assert read_raw(peer, "5m:resilient|n=3")[1] == 30
    assert raw_keys(peer, "lock:*") == []
    peer.close()


@pytest.mark.asyncio
async def test_fail_open_false_raises_cache_error_from_the_await(own_server):
    srv = own_server()
    cachu.configure(redis_url=srv.url, redis_socket_timeout=0.5, fail_open=False)
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def strict(n):
        calls.append(n)
        return n

    assert await strict(1) == 1
    srv.stop()
    for n in (1, 2):
        with pytest.raises(cachu.CacheError) as info:
            await asyncio.wait_for(strict(n), WAIT)
        assert isinstance(info.value, cachu.CacheError)
    assert calls == [1]  # the function did not run
    srv.start()
    # The breaker refuses calls at once until a probe finds Redis back.
    deadline = time.monotonic() + WAIT
    while True:
        try:
            assert await asyncio.wait_for(strict(2), WAIT) == 2
            break
        except cachu.BackendUnavailableError as e:
            assert "not tried again" in str(e) and time.monotonic() < deadline
            await asyncio.sleep(0.01)
    assert calls == [1, 2]


@pytest.mark.asyncio
async def test_server_dies_during_a_computation_fails_open(own_server):
    srv = own_server()
    cachu.configure(redis_url=srv.url, redis_socket_timeout=0.5)
    started = asyncio.Event()
    gate = asyncio.Event()
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def fn(n):
        calls.append(n)
        started.set()
        await gate.wait()
        return n * 2

    holder = asyncio.create_task(fn(1))
    await asyncio.wait_for(started.wait(), WAIT)
    waiters = [asyncio.create_task(fn(1)) for _ in range(5)]
    await asyncio.sleep(0.1)
    srv.stop()
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(holder, *waiters), WAIT)
    assert results == [2] * 6
    srv.start()
    peer = srv.client()
    await until_cached(peer, "5m:fn|n=3", lambda: fn(3), 6)
    peer.close()
    del calls[:]
    assert await asyncio.wait_for(fn(3), WAIT) == 6
    assert calls == []


@pytest.mark.asyncio
async def test_unreachable_from_the_start_fails_open():
    port = free_port()  # nothing listens there
    cachu.configure(redis_url=f"redis://127.0.0.1:{port}/0", redis_socket_timeout=0.5)
    calls = []

    @cachu.cache(ttl=300, backend="redis")
    async def through(n):
        calls.append(n)
        return n + 1

    for n in (1, 1, 2):
        assert await asyncio.wait_for(through(n), WAIT) == n + 1
    assert calls == [1, 1, 2]
    with pytest.raises(cachu.CacheError):
        ab = await cachu.get_async_backend("redis", ttl=300)
        await asyncio.wait_for(ab.get("5m:through|n=1"), WAIT)


# -- event loops and threads -----------------------------------------------------------------


def test_module_level_function_under_several_asyncio_runs(r):
    assert asyncio.run(module_level_cube(3)) == 27
    assert asyncio.run(module_level_cube(3)) == 27
    assert asyncio.run(module_level_cube.get(x=3)) == 27
    assert raw_keys(r) == ["5m:module_level_cube|x=3"]


@pytest.mark.asyncio
async def test_module_level_function_in_a_pytest_asyncio_loop(r):
    assert await module_level_cube.get(default=None, x=4) is None  # flushed between tests
    assert await asyncio.gather(*(module_level_cube(4) for _ in range(20))) == [64] * 20
    assert raw_keys(r) == ["5m:module_level_cube|x=4"]

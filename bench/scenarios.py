"""Timing code for the cachu benchmark.

This file runs under two interpreters: the main one (our Rust-backed
``cachu`` plus the peer libraries) and a virtualenv holding the reference
pure-Python ``cachu==0.2.7``.  It imports nothing but the standard library at
module level, so ``bench/run.py`` can import it for the scenario table too.

Two ways to run it:

* worker mode (what ``run.py`` uses)::

      python scenarios.py --worker --role ours|reference|peers [--redis-url URL]
                          [--cluster-url URL]

  reads one JSON command per line on stdin and answers one JSON line on
  stdout, so the driver can interleave implementations repeat by repeat;

* batch mode, for a quick look by hand::

      python scenarios.py --role reference|ours|peers [--only memory,file] [--quick]

  runs every case it can and prints one JSON document on stdout.

Every figure is nanoseconds per call of the decorated function, from a loop
timed with ``time.perf_counter_ns`` (loop overhead included, garbage
collector off while timing, as ``timeit`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback

perf_counter_ns = time.perf_counter_ns

NKEYS = 64
KEYS = list(range(NKEYS))
TTL = 300

# The scenarios, in the order they are reported.  ``groups`` are what
# ``--only`` selects (a scenario runs if any of its groups is asked for, and
# needs the redis server if 'redis' is among them); ``impls`` lists every implementation that may run the
# scenario: 'cachu' runs in both interpreters (as "ours" and "reference"),
# the others only in the main one.  ``kind`` picks the timing loop.
SCENARIOS = [
    # "ours, bounded": ours with memory_maxsize, run in the peers worker so
    # that its repeats alternate with ours' (the bar: at most 1.15x ours).
    {
        "name": "memory hit",
        "groups": ("memory",),
        "kind": "hit",
        "impls": [
            "cachu",
            "ours, bounded",
            "lru_cache",
            "lru_cache + copy",
            "cachebox",
            "moka-py",
            "cachetools",
        ],
    },
    {
        "name": "memory hit, int result",
        "groups": ("memory",),
        "kind": "hit",
        "impls": ["cachu", "lru_cache", "cachebox", "moka-py", "cachetools"],
    },
    # The 64 keys, each round after an untimed clear: the miss the
    # performance bar means (DESIGN.md: "f(x: int) -> dict with 64 distinct
    # keys").
    {
        "name": "memory miss + store",
        "groups": ("memory",),
        "kind": "miss",
        "impls": ["cachu", "lru_cache", "cachebox", "moka-py", "cachetools"],
    },
    # A fresh argument every call, so the cache grows by hundreds of
    # thousands of entries during the run: adds the cost of new memory
    # (page faults, table growth). Informational, no target.
    {
        "name": "memory miss + store, growing cache",
        "groups": ("memory",),
        "kind": "miss",
        "impls": ["cachu", "lru_cache", "cachebox", "moka-py", "cachetools"],
    },
    {
        "name": "async memory hit",
        "groups": ("async",),
        "kind": "hit",
        "impls": ["cachu", "cashews", "moka-py"],
    },
    {
        "name": "async memory miss + store",
        "groups": ("async",),
        "kind": "miss",
        "impls": ["cachu", "cashews", "moka-py"],
    },
    # "ours, signed": ours with signing_key, run in the peers worker so that
    # its repeats alternate with ours': the difference is what checking a
    # value's signature costs.
    {
        "name": "file hit",
        "groups": ("file",),
        "kind": "hit",
        "impls": ["cachu", "ours, signed", "diskcache"],
    },
    # The same hit from a coroutine: read inline on the event loop's thread
    # (the bar: at most 1.5x the sync file hit).
    {
        "name": "async file hit",
        "groups": ("async", "file"),
        "kind": "hit",
        "impls": ["cachu"],
    },
    # What a caller of an expired key pays when the function takes 1 ms:
    # with stale_while_revalidate it gets the old value at once (and one
    # refresh starts in the background); without, it waits for the function.
    # Both are ours, in the peers worker, so their repeats alternate.
    {
        "name": "expired key, function taking 1 ms",
        "groups": ("memory",),
        "kind": "slow_miss",
        "impls": ["ours, stale_while_revalidate", "ours, no stale window"],
    },
    {
        "name": "file miss + store",
        "groups": ("file",),
        "kind": "slow_miss",
        "impls": ["cachu", "diskcache"],
    },
    {
        "name": "redis hit",
        "groups": ("redis",),
        "kind": "hit",
        "impls": [
            "cachu",
            "ours, signed",
            "raw socket GET",
            "compiled client GET, nothing else",
            "redis crate GET, nothing else",
            "raw socket get-or-lock script",
            "redis-py GET+unpickle",
        ],
    },
    {
        "name": "redis miss + store",
        "groups": ("redis",),
        "kind": "slow_miss",
        # "raw socket GET" again: the unit of the round-trip target, timed in
        # turn with ours' miss, so that the two see the same moments of the
        # machine (the hit block's GET is timed a minute earlier).
        "impls": [
            "cachu",
            "raw socket GET",
            "raw socket lock+get, store+release",
            "compiled client, same commands, nothing else",
            "redis crate, same commands, nothing else",
            "redis-py SET+pickle",
        ],
    },
    # kept after the sync redis rows: the redis scenarios run pinned to one CPU
    {
        "name": "async redis hit",
        "groups": ("async", "redis"),
        "kind": "hit",
        "impls": ["cachu", "redis.asyncio GET+unpickle", "cashews"],
    },
    {
        "name": "async redis miss + store",
        "groups": ("async", "redis"),
        "kind": "slow_miss",
        "impls": ["cachu", "redis.asyncio GET+unpickle", "redis.asyncio SET+pickle", "cashews"],
    },
    # redis_near_cache: a Redis hit served from process memory (the bar: at
    # most 2x a memory hit), beside a memory hit and a plain Redis hit, both
    # ours, in the peers worker; the near row also counts the commands Redis
    # ran meanwhile (expected: none).
    {
        "name": "near-cache hit",
        "groups": ("near", "redis"),
        "kind": "hit",
        "reference": False,
        "impls": ["cachu", "ours, memory hit", "ours, redis hit, near cache off"],
    },
    # a value written, then read back (`f.set(v, x=k)`, then `f(k)`): with
    # the near cache the write keeps the value, so the read is a memory hit;
    # both rows note the Redis commands per write + read.
    {
        "name": "near-cache set + get",
        "groups": ("near", "redis"),
        "kind": "slow_miss",
        "reference": False,
        "impls": ["cachu", "ours, near cache off"],
    },
    # a 3-master + 3-replica Redis Cluster (bench/cluster.py), pinned like redis
    {
        "name": "cluster hit",
        "groups": ("cluster",),
        "kind": "hit",
        "impls": ["cachu", "raw socket GET, owner node"],
    },
    {
        "name": "cluster miss + store",
        "groups": ("cluster",),
        "kind": "slow_miss",
        "impls": [
            "cachu",
            "raw socket GET, owner node",
            "raw socket lock+get, store+release, owner node",
        ],
    },
]
SCENARIO_BY_NAME = {s["name"]: s for s in SCENARIOS}
GROUPS = ["memory", "async", "file", "redis", "near", "cluster"]


def selected(scenario, groups):
    """Whether a scenario (dict or name) belongs to any of these groups."""
    if isinstance(scenario, str):
        scenario = SCENARIO_BY_NAME[scenario]
    return any(g in groups for g in scenario["groups"])


def needs_redis(scenario):
    if isinstance(scenario, str):
        scenario = SCENARIO_BY_NAME[scenario]
    return "redis" in scenario["groups"]


def needs_cluster(scenario):
    if isinstance(scenario, str):
        scenario = SCENARIO_BY_NAME[scenario]
    return "cluster" in scenario["groups"]


# Loop sizes per kind: (calls in the first calibration batch, fewest calls
# in a timed repeat, most calls in a timed repeat).
LOOP_LIMITS = {
    "hit": (64, 640, 200_000),
    "miss": (32, 500, 10_000),
    "slow_miss": (8, 40, 10_000),
}


def user(x):
    return {"id": x, "name": f"user{x}", "score": x * 1.5}


def counted_user(case):
    """``user``, counting its calls in ``case.calls`` in its own frame.

    The count proves every timed miss ran the function. Kept in the
    function's frame, not in a wrapper around ``user``: a wrapper adds a
    Python call to every miss of every implementation (about 50 ns, a
    sixteenth of our growing-cache miss), which DESIGN.md's function does
    not have. The cases' ``check`` compares its results with ``user``'s.
    """

    def user_counted(x):
        case.calls += 1
        return {"id": x, "name": f"user{x}", "score": x * 1.5}

    return user_counted


class Unsupported(Exception):
    """This implementation does not offer the scenario."""


# ---------------------------------------------------------------------------
# timing loops


def _gc_off():
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    return was


def time_hits(f, n, keys=KEYS):
    """ns per call of f(k), cycling through keys, about n calls."""
    outer = range(max(1, n // len(keys)))
    was = _gc_off()
    try:
        t0 = perf_counter_ns()
        for _ in outer:
            for k in keys:
                f(k)
        t1 = perf_counter_ns()
    finally:
        if was:
            gc.enable()
    return (t1 - t0) / (len(outer) * len(keys))


def time_rounds(f, clear, n, keys=KEYS):
    """ns per call of f(k) over the keys, each round after an untimed clear()."""
    rounds = range(max(1, n // len(keys)))
    total = 0
    was = _gc_off()
    try:
        for _ in rounds:
            clear()
            t0 = perf_counter_ns()
            for k in keys:
                f(k)
            total += perf_counter_ns() - t0
    finally:
        if was:
            gc.enable()
    return total / (len(rounds) * len(keys))


def time_fresh(f, n, start):
    """ns per call of f(x) for n fresh integer arguments from start."""
    args = range(start, start + n)
    was = _gc_off()
    try:
        t0 = perf_counter_ns()
        for x in args:
            f(x)
        t1 = perf_counter_ns()
    finally:
        if was:
            gc.enable()
    return (t1 - t0) / n


async def _atime_hits(f, n, keys):
    outer = range(max(1, n // len(keys)))
    t0 = perf_counter_ns()
    for _ in outer:
        for k in keys:
            await f(k)
    t1 = perf_counter_ns()
    return (t1 - t0) / (len(outer) * len(keys))


async def _atime_fresh(f, n, start):
    args = range(start, start + n)
    t0 = perf_counter_ns()
    for x in args:
        await f(x)
    t1 = perf_counter_ns()
    return (t1 - t0) / n


# ---------------------------------------------------------------------------
# cases


class Case:
    """One (scenario, implementation) pair, set up once, timed many times."""

    kind = "hit"

    def __init__(self, env):
        self.env = env
        self.calls = 0  # calls that reached the undecorated body
        self.fn = None

    def counted(self, body):
        if body is user:
            return counted_user(self)

        def inner(x):
            self.calls += 1
            return body(x)

        return inner

    def setup(self):
        raise NotImplementedError

    def check(self):
        """Called after setup: the cached function must give right answers."""

    def run(self, n):
        raise NotImplementedError

    def close(self):
        pass


class HitCase(Case):
    """A synchronous function warmed with the 64 keys, then timed on hits."""

    expected = staticmethod(user)

    def build(self):
        raise NotImplementedError

    def setup(self):
        self.fn = self.build()
        for k in KEYS:
            self.fn(k)

    def check(self):
        for k in (0, 1, NKEYS - 1):
            got = self.fn(k)
            want = self.expected(k)
            if got != want:
                raise AssertionError(f"wrong result for {k}: {got!r} != {want!r}")
        if isinstance(self.expected(0), dict):
            got = self.fn(0)
            got["mutated"] = True
            if "mutated" in self.fn(0):
                # Reported, not fatal: some peers return the cached object.
                self.env.notes.append("returns the cached object (no copy)")

    def run(self, n):
        before = self.calls
        ns = time_hits(self.fn, n)
        if self.calls != before:
            self.env.notes.append(f"{self.calls - before} calls missed the cache")
        return ns


class MissCase(Case):
    """Every call gets a fresh argument, so every call misses and stores."""

    kind = "miss"

    def build(self):
        raise NotImplementedError

    def setup(self):
        self.fn = self.build()
        self.next = 10_000_000
        self.fn(self.next - 1)  # create the backend outside the timed loop

    def check(self):
        x = self.next - 2
        if self.fn(x) != user(x) or self.fn(x) != user(x):
            raise AssertionError("wrong result")

    def run(self, n):
        start = self.next
        self.next += n
        before = self.calls
        ns = time_fresh(self.fn, n, start)
        if self.calls - before != n:
            self.env.notes.append(
                f"{n - (self.calls - before)} of {n} fresh calls did not run the function"
            )
        return ns


class MissRoundsCase(Case):
    """The 64 keys in rounds, the cache cleared (untimed) before each round,
    so every timed call misses and stores into a cache of at most 64 entries."""

    kind = "miss"

    def build(self):
        raise NotImplementedError

    def clear(self):
        self.fn.cache_clear()

    def setup(self):
        self.fn = self.build()
        self.fn(-1)  # create the backend outside the timed loop

    def check(self):
        self.clear()
        for k in (0, 1):
            if self.fn(k) != user(k) or self.fn(k) != user(k):
                raise AssertionError("wrong result")

    def run(self, n):
        before = self.calls
        ns = time_rounds(self.fn, self.clear, n)
        rounds = max(1, n // NKEYS)
        if self.calls - before != rounds * NKEYS:
            self.env.notes.append(
                f"{rounds * NKEYS - (self.calls - before)} of {rounds * NKEYS} calls after a clear did not run the function"
            )
        return ns


class AsyncCase(Case):
    """Base of the async cases: everything runs in the worker's one event loop."""

    def await_(self, coro, gc_off=False):
        was = _gc_off() if gc_off else False
        try:
            return self.env.loop().run_until_complete(coro)
        finally:
            if was:
                gc.enable()


class AsyncHitCase(AsyncCase):
    """An async def warmed with the 64 keys; awaited in a loop in one event loop."""

    keys = KEYS

    def build(self):
        raise NotImplementedError

    def setup(self):
        self.fn = self.build()

        async def warm():
            for k in KEYS:
                await self.fn(k)
            got = await self.fn(5)
            if got != user(5):
                raise AssertionError(f"wrong result: {got!r}")

        self.await_(warm())

    def run(self, n):
        before = self.calls
        ns = self.await_(_atime_hits(self.fn, n, self.keys), gc_off=True)
        if self.calls != before:
            self.env.notes.append(f"{self.calls - before} calls missed the cache")
        return ns


class AsyncMissCase(AsyncCase):
    """An async def awaited with a fresh argument each call: every call misses and stores."""

    kind = "miss"

    def build(self):
        raise NotImplementedError

    def setup(self):
        self.fn = self.build()
        self.next = 10_000_000
        self.await_(self.fn(self.next - 1))  # create the backend outside the timed loop

    def check(self):
        async def twice(x):
            return await self.fn(x), await self.fn(x)

        x = self.next - 2
        if self.await_(twice(x)) != (user(x), user(x)):
            raise AssertionError("wrong result")

    def run(self, n):
        start = self.next
        self.next += n
        before = self.calls
        ns = self.await_(_atime_fresh(self.fn, n, start), gc_off=True)
        if self.calls - before != n:
            self.env.notes.append(
                f"{n - (self.calls - before)} of {n} fresh calls did not run the function"
            )
        return ns


def _int_result(x):
    return x * 2


def _cachu_sync(env, body, name, backend):
    import cachu

    body.__name__ = name
    body.__qualname__ = name
    return cachu.cache(ttl=TTL, backend=backend)(body)


# -- memory hit (dict result) ----------------------------------------------


class CachuMemHit(HitCase):
    def build(self):
        return _cachu_sync(self.env, self.counted(user), "bench_mem_hit", "memory")


class LruHit(HitCase):
    def build(self):
        import functools

        return functools.lru_cache(maxsize=None)(self.counted(user))


class LruCopyHit(HitCase):
    """The floor our copy semantics allow: lru_cache, then a copy of the result's container.

    ``user()``'s dict holds only immutable values, so one ``dict.copy`` is the
    whole copy a caller needs to mutate its result freely (what ours returns).
    """

    def build(self):
        import functools

        cached = functools.lru_cache(maxsize=None)(self.counted(user))

        def fn(x):
            return cached(x).copy()

        return fn


class CacheboxHit(HitCase):
    def build(self):
        import cachebox

        return cachebox.cached(cachebox.Cache(0))(self.counted(user))


class MokaHit(HitCase):
    def build(self):
        import moka_py

        return moka_py.cached(maxsize=1024, ttl=TTL)(self.counted(user))


class CachetoolsHit(HitCase):
    def build(self):
        import cachetools

        return cachetools.cached(cachetools.TTLCache(1024, TTL))(self.counted(user))


# -- memory hit, int result ---------------------------------------------------


def _int_variant(cls, name):
    class IntCase(cls):
        expected = staticmethod(_int_result)

        def counted(self, body):
            return Case.counted(self, _int_result)

        def build(self):
            if cls is CachuMemHit:
                return _cachu_sync(self.env, self.counted(None), "bench_mem_hit_int", "memory")
            return cls.build(self)

    IntCase.__name__ = name
    return IntCase


# -- memory miss + store -------------------------------------------------------


class CachuMemMiss(MissRoundsCase):
    def build(self):
        return _cachu_sync(self.env, self.counted(user), "bench_mem_miss", "memory")

    def clear(self):
        import cachu

        cachu.cache_clear(backend="memory", ttl=TTL)


class CachuMemGrowingMiss(MissCase):
    def build(self):
        return _cachu_sync(self.env, self.counted(user), "bench_mem_grow", "memory")


def _miss_variant(hit_cls, base=MissRoundsCase, suffix="Miss"):
    class Miss(base):
        def build(self):
            return hit_cls.build(self)

    Miss.__name__ = hit_cls.__name__.replace("Hit", suffix)
    return Miss


def _growing_variant(hit_cls):
    return _miss_variant(hit_cls, MissCase, "GrowingMiss")


# -- async: memory and redis -------------------------------------------------------


def _async_counted(case):
    # As counted_user: the count in the function's own frame.
    async def body(x):
        case.calls += 1
        return {"id": x, "name": f"user{x}", "score": x * 1.5}

    return body


def _cachu_async(case, name, backend):
    import cachu

    if backend == "redis":
        case.env.configure_redis()
    body = _async_counted(case)
    body.__name__ = body.__qualname__ = name
    return cachu.cache(ttl=TTL, backend=backend)(body)


class CachuAsyncHit(AsyncHitCase):
    def build(self):
        return _cachu_async(self, "bench_async_hit", "memory")


class CachuAsyncMiss(AsyncMissCase):
    def build(self):
        return _cachu_async(self, "bench_async_miss", "memory")


class CachuAsyncRedisHit(AsyncHitCase):
    def build(self):
        return _cachu_async(self, "bench_async_redis_hit", "redis")


class CachuAsyncRedisMiss(AsyncMissCase):
    kind = "slow_miss"

    def build(self):
        return _cachu_async(self, "bench_async_redis_miss", "redis")


class CashewsAsyncHit(AsyncHitCase):
    def build(self):
        import cashews

        cashews.cache.setup("mem://")
        return cashews.cache(ttl="5m", key="bench_async_hit:{x}")(_async_counted(self))


class CashewsCase(AsyncCase):
    """cashews on a Cache of its own; suppress=False so redis errors raise."""

    url = "mem://"
    key = ""

    def build(self):
        import cashews

        self.cache = cashews.Cache()
        if self.url == "redis":
            self.cache.setup(self.env.need_redis_url(), suppress=False)
        else:
            self.cache.setup(self.url)
        return self.cache(ttl="5m", key=self.key + ":{x}")(_async_counted(self))

    def close(self):
        self.await_(self.cache.close())


class CashewsAsyncMiss(CashewsCase, AsyncMissCase):
    key = "bench_async_miss"


class CashewsAsyncRedisHit(CashewsCase, AsyncHitCase):
    url, key = "redis", "bench_async_redis_hit"


class CashewsAsyncRedisMiss(CashewsCase, AsyncMissCase):
    kind = "slow_miss"
    url, key = "redis", "bench_async_redis_miss"


class MokaAsyncHit(AsyncHitCase):
    def build(self):
        import moka_py

        return moka_py.cached(maxsize=1024, ttl=TTL)(_async_counted(self))


class MokaAsyncMiss(AsyncMissCase):
    build = MokaAsyncHit.build


class RawAsyncRedisGet(AsyncHitCase):
    """The bare async GET round trip: redis.asyncio GET of a pickled dict, then unpickle."""

    keys = tuple(f"bench:araw:{k}".encode() for k in KEYS)

    def setup(self):
        client = self.env.aredis_client()

        async def fill():
            for k, name in zip(KEYS, self.keys):
                await client.set(name, pickle.dumps(user(k)), ex=TTL)

        self.await_(fill())
        get, loads = client.get, pickle.loads

        async def fn(name):
            return loads(await get(name))

        self.fn = fn

    def check(self):
        got = self.await_(self.fn(self.keys[3]))
        if got != user(3):
            raise AssertionError(f"wrong result: {got!r}")


class RawAsyncRedisSet(AsyncMissCase):
    """One redis.asyncio SET (with expiry) of a freshly pickled dict."""

    kind = "slow_miss"

    def build(self):
        client = self.env.aredis_client()
        set_, dumps = client.set, pickle.dumps

        async def fn(x):
            self.calls += 1
            value = user(x)
            await set_(f"bench:arawset:{x}", dumps(value), ex=TTL)
            return value

        return fn


# -- file ---------------------------------------------------------------------------


class CachuFileHit(HitCase):
    def build(self):
        self.env.configure_file_dir()
        return _cachu_sync(self.env, self.counted(user), "bench_file_hit", "file")


class CachuAsyncFileHit(AsyncHitCase):
    def build(self):
        self.env.configure_file_dir()
        return _cachu_async(self, "bench_async_file_hit", "file")


STALE_PACKAGE = "bench_stale"
#: Short enough that the bench can let every entry expire between repeats.
STALE_TTL = 0.05


class ExpiredKeyCase(Case):
    """Calls of keys whose entries have just expired, each after an untimed
    ``.set()`` of every key and a sleep past the TTL; the function sleeps
    1 ms. ``window`` is the stale_while_revalidate in seconds (0: none)."""

    kind = "slow_miss"
    window = 0.0

    def setup(self):
        import cachu

        def slow(x):
            self.calls += 1
            time.sleep(0.001)
            return user(x)

        slow.__name__ = slow.__qualname__ = f"bench_expired_{int(self.window)}"
        options = {"stale_while_revalidate": self.window} if self.window else {}
        self.fn = cachu.cache(ttl=STALE_TTL, backend="memory", package=STALE_PACKAGE, **options)(
            slow
        )
        self.next = 0
        self.expected = 0

    def run(self, n):
        keys = range(self.next, self.next + n)
        self.next += n
        # Each key's function runs once: in the call, or in its refresh.
        self.expected = self.calls + n
        for k in keys:
            self.fn.set(user(k), x=k)
        time.sleep(STALE_TTL * 1.5)
        was = _gc_off()
        try:
            t0 = perf_counter_ns()
            for k in keys:
                self.fn(k)
            t1 = perf_counter_ns()
        finally:
            if was:
                gc.enable()
        # Let the background refreshes (one per key) finish before the next
        # repeat, so that they do not run during it.
        deadline = time.monotonic() + 30
        while self.calls < self.expected and time.monotonic() < deadline:
            time.sleep(0.001)
        return (t1 - t0) / n


class ExpiredKeyStale(ExpiredKeyCase):
    window = 3600.0


class CachuFileMiss(MissCase):
    kind = "slow_miss"

    def build(self):
        self.env.configure_file_dir()
        return _cachu_sync(self.env, self.counted(user), "bench_file_miss", "file")


BOUNDED_PACKAGE = "bench_bounded"


class CachuBoundedMemHit(HitCase):
    """The memory hit, in a package whose memory regions hold at most 1,024
    entries (the 64 keys fit: every call still hits)."""

    def build(self):
        import cachu

        if not hasattr(cachu, "_cachu"):
            raise Unsupported("memory_maxsize is new in ours")
        cachu.configure(memory_maxsize=1024, package=BOUNDED_PACKAGE)
        body = self.counted(user)
        body.__name__ = body.__qualname__ = "bench_bounded_mem_hit"
        return cachu.cache(ttl=TTL, backend="memory", package=BOUNDED_PACKAGE)(body)


SIGNED_PACKAGE = "bench_signed"


def _cachu_signed(case, name, backend):
    """Ours: a function of a package of its own that signs its values."""
    import cachu

    if not hasattr(cachu, "_cachu"):
        raise Unsupported("signing_key is new in ours")
    options = {"file_dir": os.path.join(case.env.tmpdir(), "cachu-files-signed")}
    os.makedirs(options["file_dir"], exist_ok=True)
    if backend == "redis":
        options = {"redis_url": case.env.need_redis_url()}
    cachu.configure(signing_key="bench-signing-key", package=SIGNED_PACKAGE, **options)
    body = case.counted(user)
    body.__name__ = body.__qualname__ = name
    return cachu.cache(ttl=TTL, backend=backend, package=SIGNED_PACKAGE)(body)


class CachuFileSignedHit(HitCase):
    def build(self):
        return _cachu_signed(self, "bench_file_signed_hit", "file")


class CachuRedisSignedHit(HitCase):
    def build(self):
        return _cachu_signed(self, "bench_redis_signed_hit", "redis")


class DiskcacheHit(HitCase):
    def build(self):
        import diskcache

        self.dc = diskcache.Cache(
            os.path.join(self.env.tmpdir(), f"diskcache-{type(self).__name__}")
        )
        return self.dc.memoize(expire=TTL)(self.counted(user))

    def close(self):
        self.dc.close()


class DiskcacheMiss(MissCase):
    kind = "slow_miss"
    build = DiskcacheHit.build
    close = DiskcacheHit.close


# -- redis ---------------------------------------------------------------------------


class CachuRedisHit(HitCase):
    def build(self):
        self.env.configure_redis()
        return _cachu_sync(self.env, self.counted(user), "bench_redis_hit", "redis")


class CachuRedisMiss(MissCase):
    kind = "slow_miss"

    def build(self):
        self.env.configure_redis()
        return _cachu_sync(self.env, self.counted(user), "bench_redis_miss", "redis")


# -- near cache (redis_near_cache) -------------------------------------------

#: The near-cache rows' own package, so no other row gets a near cache.
NEAR_PACKAGE = "bench_near"
NEAR_NOTE = "redis commands per 100k near hits: "


def redis_commands(client):
    """Commands the server ran so far, minus INFO (this count's own) and
    PING (the tracking connection's health check, once a second)."""
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_ping"))


def _timed_with_commands(case, n):
    """A hit case's timed run, and the Redis commands the server ran per call
    meanwhile."""
    client = case.env.redis_client()
    before = redis_commands(client)
    ns = HitCase.run(case, n)
    calls = max(1, n // NKEYS) * NKEYS
    return ns, (redis_commands(client) - before) / calls


class CachuNearHit(HitCase):
    """Redis hits served by the near cache (1024 entries)."""

    def build(self):
        import cachu

        cachu.configure(
            package=NEAR_PACKAGE, redis_url=self.env.need_redis_url(), redis_near_cache=1024
        )
        body = self.counted(user)
        body.__name__ = body.__qualname__ = "bench_near_hit"
        return cachu.cache(ttl=TTL, backend="redis", package=NEAR_PACKAGE)(body)

    def setup(self):
        import cachu

        super().setup()
        # Tracking comes up in the background: call until every key is near.
        backend = cachu.get_backend("redis", NEAR_PACKAGE, ttl=TTL)
        deadline = time.monotonic() + 30
        while backend.near_size < NKEYS:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the near cache holds {backend.near_size} of {NKEYS} keys")
            time.sleep(0.01)
            for k in KEYS:
                self.fn(k)

    def run(self, n):
        ns, per_call = _timed_with_commands(self, n)
        self.env.notes.append(f"{NEAR_NOTE}{per_call * 100_000:.1f}")
        return ns


SET_GET_NOTE = "redis commands per set + get: "


class CachuNearSetGet(HitCase):
    """Write a value with the function's `set`, then read it back: the near
    cache keeps what it writes, so the read makes no round trip."""

    near = True

    def build(self):
        import cachu

        if self.near:
            cachu.configure(
                package=NEAR_PACKAGE, redis_url=self.env.need_redis_url(), redis_near_cache=1024
            )
            body = self.counted(user)
            body.__name__ = body.__qualname__ = "bench_near_set_get"
            f = cachu.cache(ttl=TTL, backend="redis", package=NEAR_PACKAGE)(body)
        else:
            self.env.configure_redis()
            f = _cachu_sync(self.env, self.counted(user), "bench_set_get", "redis")

        def set_get(k):
            f.set(user(k), x=k)
            return f(k)

        return set_get

    def setup(self):
        import cachu

        super().setup()
        if not self.near:
            return
        # Tracking comes up in the background; writes are kept once it is.
        backend = cachu.get_backend("redis", NEAR_PACKAGE, ttl=TTL)
        deadline = time.monotonic() + 30
        while not backend.near_state[1]:
            if time.monotonic() > deadline:
                raise RuntimeError("the near cache's tracking never came up")
            time.sleep(0.01)

    def run(self, n):
        ns, per_call = _timed_with_commands(self, n)
        self.env.notes.append(f"{SET_GET_NOTE}{per_call:.2f}")
        return ns


class CachuSetGetNearOff(CachuNearSetGet):
    """The same without a near cache: the read is a Redis hit."""

    near = False


class CachuPeersMemHit(HitCase):
    """Ours, a memory hit, in the peers worker beside the near rows."""

    def build(self):
        return _cachu_sync(self.env, self.counted(user), "bench_near_row_mem_hit", "memory")


class CachuPeersRedisHit(HitCase):
    """Ours, a plain Redis hit (no near cache), in the peers worker."""

    def build(self):
        self.env.configure_redis()
        return _cachu_sync(self.env, self.counted(user), "bench_near_row_redis_hit", "redis")


class RawRedisGet(HitCase):
    """The 'bare GET round trip': redis-py GET of a pickled dict, then unpickle."""

    def setup(self):
        client = self.env.redis_client()
        names = [f"bench:raw:{k}".encode() for k in KEYS]
        for k, name in zip(KEYS, names):
            client.set(name, pickle.dumps(user(k)), ex=TTL)
        get, loads = client.get, pickle.loads

        def fn(name):
            return loads(get(name))

        self.fn, self.names = fn, names

    def check(self):
        if self.fn(self.names[3]) != user(3):
            raise AssertionError("wrong result")

    def run(self, n):
        return time_hits(self.fn, n, self.names)


def _raw_connection(env):
    """A raw socket connection (bench/resp_floor.py) to the single server,
    on the database the worker's redis-py client uses."""
    from resp_floor import RawConnection

    kwargs = env.redis_client().connection_pool.connection_kwargs
    conn = RawConnection(kwargs["port"])
    conn.command(b"SELECT", str(kwargs.get("db", 0)).encode())
    return conn


class RawSocketGet(HitCase):
    """The floor: one GET round trip on a plain socket (bench/resp_floor.py), no decoding."""

    def setup(self):
        client = self.env.redis_client()
        names = [f"bench:raw:{k}".encode() for k in KEYS]
        for k, name in zip(KEYS, names):
            client.set(name, pickle.dumps(user(k)), ex=TTL)
        self.conn = _raw_connection(self.env)
        self.fn, self.names = self.conn.getter(), names

    def check(self):
        if pickle.loads(self.fn(self.names[3])) != user(3):
            raise AssertionError("wrong result")

    def run(self, n):
        return time_hits(self.fn, n, self.names)

    def close(self):
        self.conn.close()


def _engine_script(name):
    """The text of one of the engine's Lua scripts, read from its source (so
    the bench's floor runs exactly the script a hit of ours runs)."""
    src = os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "src", "backend", "redis", "mod.rs"
    )
    with open(src) as f:
        text = f.read()
    start = text.index(f'const {name}: &str = r"') + len(f'const {name}: &str = r"')
    return text[start : text.index('";', start)].encode()


class RawSocketScript(RawSocketGet):
    """One round trip of the engine's own get-or-lock script (EVALSHA) on a hit,
    on a plain socket: the floor of a hit that is also dogpile-safe on a miss."""

    def setup(self):
        super().setup()
        sha = self.conn.command(b"SCRIPT", b"LOAD", _engine_script("GET_OR_LOCK_LUA"))
        run = self.conn.runner(
            lambda name: (b"EVALSHA", sha, b"2", name, b"lock:" + name, b"t" * 32, b"5")
        )

        def fn(name):
            # The value is the array's second item; its bulk header ends the
            # second line of the reply.
            reply = run(name)
            start = reply.index(b"\r\n", reply.index(b"\r\n", reply.index(b"\r\n") + 2) + 2) + 2
            return reply[start:-2]

        self.fn = fn


class RawSocketMiss(MissCase):
    """The floor of a dogpile-safe miss on a plain socket: the commands a miss
    of ours sends, in its two round trips (take the lock and look, in one
    write; store and release the lock by its owner's script, in another),
    around the same function and pickle, with nothing decoded."""

    kind = "slow_miss"

    #: Key names, by the argument.
    names = "bench:rawmiss:{}"

    def connect(self):
        """``(connections, route)``: the raw connections, and ``route(x) ->
        (exchange, name)``, the exchanger and the key name of argument ``x``."""
        conn = _raw_connection(self.env)
        exchange, names = conn.exchanger(), self.names
        return [conn], lambda x: (exchange, names.format(x).encode())

    def build(self):
        from resp_floor import encode

        self.conns, route = self.connect()
        script = _engine_script("RELEASE_LUA")
        # Loaded on every connection's server (the same SHA on each).
        for conn in self.conns:
            sha = conn.command(b"SCRIPT", b"LOAD", script)
        dumps, now = pickle.dumps, time.time
        token, ttl = b"t" * 32, str(TTL).encode()

        def fn(x):
            exchange, name = route(x)
            lock = b"lock:" + name
            exchange(encode(b"SET", lock, token, b"NX", b"EX", b"10") + encode(b"GET", name), 2)
            self.calls += 1
            value = user(x)
            payload = struct.pack("d", now()) + dumps(value)
            exchange(
                encode(b"SETEX", name, ttl, payload) + encode(b"EVALSHA", sha, b"1", lock, token),
                2,
            )
            return value

        return fn

    def close(self):
        for conn in self.conns:
            conn.close()


def _redis_floor_binary():
    """Build (once; cargo keeps it) and locate ``bench/redis_floor``, the
    compiled client of :class:`CompiledFloorMiss`."""
    here = os.path.dirname(os.path.abspath(__file__))
    manifest = os.path.join(here, "redis_floor", "Cargo.toml")
    target = os.path.join(here, "redis_floor", "target")
    cargo = shutil.which("cargo")
    if cargo is None:
        raise Unsupported("no cargo on PATH to build bench/redis_floor")
    subprocess.run(
        [
            cargo,
            "build",
            "--release",
            "--quiet",
            "--manifest-path",
            manifest,
            "--target-dir",
            target,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return os.path.join(target, "release", "redis_floor")


class CompiledFloor:
    """The compiled client (``bench/redis_floor``), one process per case: a
    floor under any client, as it does nothing but send the commands and
    read their replies (no function, no pickle, no Python in its timed
    loop). It times its own loops; its process runs on this worker's CPU."""

    def start(self):
        self.conn = _raw_connection(self.env)
        sha = self.conn.command(b"SCRIPT", b"LOAD", _engine_script("RELEASE_LUA"))
        sha = sha.decode() if isinstance(sha, bytes) else sha
        kwargs = self.env.redis_client().connection_pool.connection_kwargs
        # A value the size of ours: the stored time, then the pickled result.
        self.payload_bytes = len(struct.pack("d", 0.0) + pickle.dumps(user(10_000_000)))
        args = [kwargs["port"], kwargs.get("db", 0), sha, TTL, self.payload_bytes]
        self.proc = subprocess.Popen(
            [_redis_floor_binary(), *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"bench/redis_floor exited ({self.proc.wait()}) on {line!r}")
        return float(answer)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)
        self.conn.close()


class CompiledFloorMiss(CompiledFloor, MissCase):
    """The floor under any client that keeps 0.2.7's lock contract: the
    commands of :class:`RawSocketMiss`, in the same two round trips."""

    kind = "slow_miss"
    # The program's own client (""), or " crate" for the redis crate's; and
    # where each's fresh keys begin.
    client = ""
    first = 10_000_000

    def setup(self):
        self.start()
        self.next = self.first

    def check(self):
        # It must have sent the commands: the value stored, the lock released.
        x = self.next - 1
        self.ask(f"miss 1 {x}{self.client}")
        name = f"bench:floormiss:{x}".encode()
        exists = [self.conn.command(b"EXISTS", k) for k in (name, b"lock:" + name)]
        if exists != [b"1", b"0"]:
            raise AssertionError(f"bench/redis_floor{self.client} did not store and release")

    def run(self, n):
        start = self.next
        self.next += n
        return self.ask(f"miss {n} {start}{self.client}")


class CompiledFloorGet(CompiledFloor, Case):
    """One GET round trip of a value the size of a pickled ``user(x)``, from
    the compiled client: the hit's floor without Python."""

    client = ""

    def setup(self):
        self.start()

    def check(self):
        self.ask(f"get 1{self.client}")
        if self.conn.command(b"STRLEN", b"bench:floorget") != str(self.payload_bytes).encode():
            raise AssertionError("bench/redis_floor did not set its value")

    def run(self, n):
        return self.ask(f"get {n}{self.client}")


class CompiledCrateMiss(CompiledFloorMiss):
    """The commands of :class:`CompiledFloorMiss`, sent through the ``redis``
    crate's connection (the client our engine uses) by the same compiled
    program: what any client built on that crate costs, before Python."""

    client = " crate"
    first = 50_000_000


class CompiledCrateGet(CompiledFloorGet):
    """The GET of :class:`CompiledFloorGet` through the ``redis`` crate's
    connection, its reply parsed into a ``Value``."""

    client = " crate"


class RawRedisSet(MissCase):
    """One redis-py SET (with expiry) of a freshly pickled dict."""

    kind = "slow_miss"

    def build(self):
        client = self.env.redis_client()
        set_, dumps = client.set, pickle.dumps

        def fn(x):
            self.calls += 1
            value = user(x)
            set_(f"bench:rawset:{x}", dumps(value), ex=TTL)
            return value

        return fn


# -- redis cluster -----------------------------------------------------------------

CLUSTER_PACKAGE = "bench_cluster"


def _cachu_cluster(case, name):
    """Ours: a function of a package of its own on the cluster."""
    import cachu

    if not hasattr(cachu, "_cachu"):
        raise Unsupported("redis+cluster:// is new in ours")
    cachu.configure(redis_url=case.env.need_cluster_url(), package=CLUSTER_PACKAGE)
    body = case.counted(user)
    body.__name__ = body.__qualname__ = name
    return cachu.cache(ttl=TTL, backend="redis", package=CLUSTER_PACKAGE)(body)


class CachuClusterHit(HitCase):
    def build(self):
        return _cachu_cluster(self, "bench_cluster_hit")


class CachuClusterMiss(MissCase):
    kind = "slow_miss"

    def build(self):
        return _cachu_cluster(self, "bench_cluster_miss")


def _cluster_seed_port(env):
    """The port of the first seed node of the throwaway cluster's URL."""
    first = env.need_cluster_url().split("://", 1)[1].split(",", 1)[0]
    return int(first.rsplit(":", 1)[1])


class RawClusterGet(RawSocketGet):
    """The floor on a cluster: one GET round trip on a plain socket to the
    master that serves the key (bench/resp_floor.py), no decoding."""

    def setup(self):
        from cluster import owner_port
        from resp_floor import RawConnection

        seed = _cluster_seed_port(self.env)
        self.conns = {}
        route = {}
        self.names = [f"bench:rawcluster:{k}".encode() for k in KEYS]
        for k, name in zip(KEYS, self.names):
            port = owner_port(seed, name)
            if port not in self.conns:
                conn = self.conns[port] = RawConnection(port)
                conn.get = conn.getter()
            conn = self.conns[port]
            conn.command(b"SET", name, pickle.dumps(user(k)), b"EX", str(TTL).encode())
            # A dict lookup picks the node, as a cluster client's routing
            # would at least cost.
            route[name] = conn.get

        def fn(name):
            return route[name](name)

        self.fn = fn

    def close(self):
        for conn in self.conns.values():
            conn.close()


class RawClusterMiss(RawSocketMiss):
    """The floor of a dogpile-safe miss on a cluster: the same commands on a
    plain socket to the master that owns the argument's keys. As ours, the
    keys spread over the masters (a key and its lock share a slot by a hash
    tag); the route is a table lookup of the slot's master, the slot a CRC16
    in C (Redis's CRC16 is CRC-CCITT from 0: ``binascii.crc_hqx``), less
    than a cluster client's routing costs.

    Spread, not in one slot: on the bench's one CPU three masters and their
    replicas take turns, and each finds its caches colder than a lone master
    does. The servers spent 1.5-2x as long per command on ours' spread keys
    as on a floor whose keys all sat on one master (INFO commandstats), and
    that floor came out 1.2x faster than ours; ours with every key in one
    slot (a hash-tagged ``key_prefix``) was 0.88x it."""

    def connect(self):
        from binascii import crc_hqx

        from cluster import slot_masters
        from resp_floor import RawConnection

        masters = slot_masters(_cluster_seed_port(self.env))
        conns = {port: RawConnection(port) for port in set(masters)}
        exchanges = {port: conn.exchanger() for port, conn in conns.items()}
        by_slot = [exchanges[port] for port in masters]

        def route(x):
            tag = b"%d" % x
            return by_slot[crc_hqx(tag, 0) & 16383], b"bench:rawmiss:{" + tag + b"}"

        return list(conns.values()), route


CASES = {
    ("memory hit", "cachu"): CachuMemHit,
    ("memory hit", "lru_cache"): LruHit,
    ("memory hit", "ours, bounded"): CachuBoundedMemHit,
    ("memory hit", "lru_cache + copy"): LruCopyHit,
    ("memory hit", "cachebox"): CacheboxHit,
    ("memory hit", "moka-py"): MokaHit,
    ("memory hit", "cachetools"): CachetoolsHit,
    ("memory hit, int result", "cachu"): _int_variant(CachuMemHit, "CachuIntHit"),
    ("memory hit, int result", "lru_cache"): _int_variant(LruHit, "LruIntHit"),
    ("memory hit, int result", "cachebox"): _int_variant(CacheboxHit, "CacheboxIntHit"),
    ("memory hit, int result", "moka-py"): _int_variant(MokaHit, "MokaIntHit"),
    ("memory hit, int result", "cachetools"): _int_variant(CachetoolsHit, "CachetoolsIntHit"),
    ("memory miss + store", "cachu"): CachuMemMiss,
    ("memory miss + store", "lru_cache"): _miss_variant(LruHit),
    ("memory miss + store", "cachebox"): _miss_variant(CacheboxHit),
    ("memory miss + store", "moka-py"): _miss_variant(MokaHit),
    ("memory miss + store", "cachetools"): _miss_variant(CachetoolsHit),
    ("memory miss + store, growing cache", "cachu"): CachuMemGrowingMiss,
    ("memory miss + store, growing cache", "lru_cache"): _growing_variant(LruHit),
    ("memory miss + store, growing cache", "cachebox"): _growing_variant(CacheboxHit),
    ("memory miss + store, growing cache", "moka-py"): _growing_variant(MokaHit),
    ("memory miss + store, growing cache", "cachetools"): _growing_variant(CachetoolsHit),
    ("async memory hit", "cachu"): CachuAsyncHit,
    ("async memory hit", "cashews"): CashewsAsyncHit,
    ("async memory hit", "moka-py"): MokaAsyncHit,
    ("async memory miss + store", "cachu"): CachuAsyncMiss,
    ("async memory miss + store", "cashews"): CashewsAsyncMiss,
    ("async memory miss + store", "moka-py"): MokaAsyncMiss,
    ("file hit", "cachu"): CachuFileHit,
    ("file hit", "ours, signed"): CachuFileSignedHit,
    ("file hit", "diskcache"): DiskcacheHit,
    ("async file hit", "cachu"): CachuAsyncFileHit,
    ("expired key, function taking 1 ms", "ours, stale_while_revalidate"): ExpiredKeyStale,
    ("expired key, function taking 1 ms", "ours, no stale window"): ExpiredKeyCase,
    ("file miss + store", "cachu"): CachuFileMiss,
    ("file miss + store", "diskcache"): DiskcacheMiss,
    ("redis hit", "cachu"): CachuRedisHit,
    ("redis hit", "ours, signed"): CachuRedisSignedHit,
    ("redis hit", "raw socket GET"): RawSocketGet,
    ("redis hit", "raw socket get-or-lock script"): RawSocketScript,
    ("redis hit", "redis-py GET+unpickle"): RawRedisGet,
    ("redis miss + store", "cachu"): CachuRedisMiss,
    ("redis miss + store", "raw socket GET"): RawSocketGet,
    ("redis miss + store", "raw socket lock+get, store+release"): RawSocketMiss,
    ("redis miss + store", "compiled client, same commands, nothing else"): CompiledFloorMiss,
    ("redis hit", "compiled client GET, nothing else"): CompiledFloorGet,
    ("redis hit", "redis crate GET, nothing else"): CompiledCrateGet,
    ("redis miss + store", "redis crate, same commands, nothing else"): CompiledCrateMiss,
    ("redis miss + store", "redis-py SET+pickle"): RawRedisSet,
    ("async redis hit", "cachu"): CachuAsyncRedisHit,
    ("async redis hit", "redis.asyncio GET+unpickle"): RawAsyncRedisGet,
    ("async redis hit", "cashews"): CashewsAsyncRedisHit,
    ("async redis miss + store", "cachu"): CachuAsyncRedisMiss,
    ("async redis miss + store", "redis.asyncio GET+unpickle"): RawAsyncRedisGet,
    ("async redis miss + store", "redis.asyncio SET+pickle"): RawAsyncRedisSet,
    ("async redis miss + store", "cashews"): CashewsAsyncRedisMiss,
    ("near-cache hit", "cachu"): CachuNearHit,
    ("near-cache hit", "ours, memory hit"): CachuPeersMemHit,
    ("near-cache hit", "ours, redis hit, near cache off"): CachuPeersRedisHit,
    ("near-cache set + get", "cachu"): CachuNearSetGet,
    ("near-cache set + get", "ours, near cache off"): CachuSetGetNearOff,
    ("cluster hit", "cachu"): CachuClusterHit,
    ("cluster hit", "raw socket GET, owner node"): RawClusterGet,
    ("cluster miss + store", "raw socket GET, owner node"): RawClusterGet,
    ("cluster miss + store", "raw socket lock+get, store+release, owner node"): RawClusterMiss,
    ("cluster miss + store", "cachu"): CachuClusterMiss,
}


# ---------------------------------------------------------------------------
# the worker's environment


def first_line(exc):
    if isinstance(exc, Unsupported):
        text = str(exc).strip()
    else:
        text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Env:
    """Per-process state shared by the cases: temp dir, event loop, redis."""

    def __init__(self, role, redis_url=None, cluster_url=None):
        self.role = role
        self.redis_url = redis_url
        self.cluster_url = cluster_url
        self._tmpdir = None
        self._loop = None
        self._client = None
        self._aclient = None
        self._file_configured = False
        self._redis_configured = False
        self.notes = []
        self.cachu_error = None
        self.info = {"role": role, "python": sys.version.split()[0]}
        if role == "peers":
            return
        try:
            import cachu

            self.info["cachu_version"] = getattr(cachu, "__version__", "?")
            self.info["cachu_file"] = getattr(cachu, "__file__", None)
            if role == "ours":
                import cachu._cachu
            elif hasattr(cachu, "_cachu") or self.info["cachu_version"] != "0.2.7":
                raise ImportError(
                    f"this interpreter has cachu {self.info['cachu_version']}, not the reference 0.2.7"
                )
        except Exception as exc:
            self.cachu_error = "not installed: " + first_line(exc)

    def tmpdir(self):
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix=f"cachu-bench-{self.role}-")
        return self._tmpdir

    def loop(self):
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop

    def configure_file_dir(self):
        if not self._file_configured:
            import cachu

            path = os.path.join(self.tmpdir(), "cachu-files")
            os.makedirs(path, exist_ok=True)
            cachu.configure(file_dir=path)
            self._file_configured = True

    def need_redis_url(self):
        if not self.redis_url:
            raise Unsupported("no redis server")
        return self.redis_url

    def need_cluster_url(self):
        if not self.cluster_url:
            raise Unsupported("no redis cluster")
        return self.cluster_url

    def configure_redis(self):
        if not self._redis_configured:
            import cachu

            cachu.configure(redis_url=self.need_redis_url())
            self._redis_configured = True

    def redis_client(self):
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.need_redis_url())
        return self._client

    def aredis_client(self):
        """A redis.asyncio client, used from this worker's one event loop."""
        if self._aclient is None:
            import redis.asyncio

            self._aclient = redis.asyncio.Redis.from_url(self.need_redis_url())
        return self._aclient

    def close(self):
        if self._loop is not None:
            if self._aclient is not None:
                try:
                    self._loop.run_until_complete(self._aclient.aclose())
                except Exception:
                    pass
            try:
                self._loop.close()
            except Exception:
                pass
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


class Worker:
    """Holds the cases of one interpreter and answers the driver's commands."""

    def __init__(self, env):
        self.env = env
        self.cases = {}

    def impls_for(self, scenario):
        impls = SCENARIO_BY_NAME[scenario]["impls"]
        if self.env.role == "peers":
            return [i for i in impls if i != "cachu"]
        return ["cachu"]

    def cmd_hello(self, _msg):
        return {"info": self.env.info, "cachu_error": self.env.cachu_error}

    def cmd_setup(self, msg):
        key = (msg["scenario"], msg["impl"])
        cls = CASES.get(key)
        if cls is None:
            raise Unsupported(f"no case for {key}")
        if (key[1] == "cachu") != (self.env.role != "peers"):
            raise Unsupported(f"{key[1]} does not run in the {self.env.role} worker")
        if key[1] == "cachu" and self.env.cachu_error:
            raise Unsupported(self.env.cachu_error)
        case = cls(self.env)
        self.cases[key] = case
        self.env.notes = []
        case.setup()
        case.check()
        return {"kind": case.kind, "notes": self.env.notes}

    def cmd_run(self, msg):
        case = self.cases[(msg["scenario"], msg["impl"])]
        self.env.notes = []
        ns = case.run(int(msg["n"]))
        return {"ns": ns, "notes": self.env.notes}

    def cmd_close(self, msg):
        case = self.cases.pop((msg["scenario"], msg["impl"]), None)
        if case is not None:
            case.close()
        gc.collect()
        return {}

    def handle(self, msg):
        try:
            return {"ok": True, **getattr(self, "cmd_" + msg["cmd"])(msg)}
        except Exception as exc:
            return {
                "ok": False,
                "error": first_line(exc),
                "unsupported": isinstance(exc, (Unsupported, NotImplementedError, ImportError)),
                "traceback": traceback.format_exc(),
            }


def serve(env):
    # Keep the protocol channel private: anything printed by a library,
    # from Python or from native code, goes to stderr instead.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(env)
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            msg = json.loads(line)
            if msg.get("cmd") == "quit":
                break
            proto.write(json.dumps(worker.handle(msg)) + "\n")
            proto.flush()
    finally:
        for key in list(worker.cases):
            worker.cmd_close({"scenario": key[0], "impl": key[1]})
        env.close()


# ---------------------------------------------------------------------------
# batch mode


def choose_n(run_once, kind, target_s):
    """Calibrate: grow a batch until it takes >= 20 ms, then size a repeat."""
    first, lo, hi = LOOP_LIMITS[kind]
    n = first
    while True:
        ns = run_once(n)
        if ns * n >= 20e6 or n >= hi:
            break
        n *= 4
    n = int(target_s * 1e9 / max(ns, 1.0))
    return max(lo, min(hi, n))


def batch(env, groups, repeats, target_s):
    worker = Worker(env)
    results = []
    for sc in SCENARIOS:
        if not selected(sc, groups):
            continue
        for impl in worker.impls_for(sc["name"]):
            row = {"scenario": sc["name"], "impl": impl, "ns": None, "error": None, "notes": []}
            results.append(row)
            base = {"scenario": sc["name"], "impl": impl}
            r = worker.handle({"cmd": "setup", **base})
            if not r["ok"]:
                row["error"] = r["error"]
                continue
            row["notes"] += r["notes"]

            def once(n, base=base):
                r = worker.handle({"cmd": "run", "n": n, **base})
                if not r["ok"]:
                    raise RuntimeError(r["error"])
                return r["ns"]

            try:
                n = choose_n(once, r["kind"], target_s)
                samples = [once(n) for _ in range(repeats)]
                row.update(ns=min(samples), samples=samples, n=n)
            except Exception as exc:
                row["error"] = first_line(exc)
            worker.handle({"cmd": "close", **base})
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--role",
        choices=["ours", "reference", "peers"],
        default="ours",
        help="ours/reference: time this interpreter's cachu (checked to be the "
        "Rust-backed one or 0.2.7); peers: time the peer libraries",
    )
    p.add_argument("--worker", action="store_true", help="serve JSON commands on stdin")
    p.add_argument("--redis-url", default=None)
    p.add_argument("--cluster-url", default=None)
    p.add_argument("--only", default=",".join(GROUPS))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    env = Env(args.role, args.redis_url, args.cluster_url)
    if args.worker:
        serve(env)
        return 0
    groups = {g.strip() for g in args.only.split(",") if g.strip()}
    try:
        results = batch(env, groups, 3 if args.quick else 7, 0.02 if args.quick else 0.15)
    finally:
        env.close()
    json.dump(
        {"info": env.info, "cachu_error": env.cachu_error, "results": results}, sys.stdout, indent=1
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

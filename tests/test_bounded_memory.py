"""Bounded memory: memory_maxsize, memory_max_bytes, memory_sweep_interval;
the eviction policy's scan resistance; sweeping; evictions, expired_swept
and nbytes on backend objects."""

import dataclasses
import math
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time

import cachu
import pytest
from cachu.backends import NO_VALUE, Backend
from helpers import run_threads

# Polling loops end on a condition; this only turns a hang into a failure.
HANG_GUARD = 60


def wait_for(condition, what):
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def memory(ttl=300):
    return cachu.get_backend("memory", ttl=ttl)


class Point:
    """Pickled when stored: neither a builtin scalar nor a plain container."""

    def __init__(self, x):
        self.x = x

    def __eq__(self, other):
        return isinstance(other, Point) and other.x == self.x


def test_maxsize_bounds_a_decorated_function():
    cachu.configure(memory_maxsize=50)

    @cachu.cache(ttl=300, backend="memory")
    def f(x):
        return {"x": x}

    for i in range(500):
        assert f(i) == {"x": i}
        assert cachu.cache_info(f).currsize <= 50
    info = cachu.cache_info(f)
    # The same three fields as 0.2.7, nothing added.
    assert (info.hits, info.misses, info.currsize) == (0, 500, 50)
    assert [f.name for f in dataclasses.fields(info)] == ["hits", "misses", "currsize"]
    b = memory()
    assert b.count() == 50 and len(list(b.keys())) == 50
    assert b.evictions == 450
    assert b.bounds == (50, None, 60.0)


def test_values_set_directly_are_bounded_too():
    cachu.configure(memory_maxsize=10)

    @cachu.cache(ttl=300, backend="memory")
    def f(x):
        return x

    for i in range(100):
        cachu.cache_set(f, i, x=i)
        assert cachu.cache_info(f).currsize <= 10
    b = memory()
    for i in range(100):
        b.set(f"k{i}", [i], 300)
        assert b.count() <= 10
    own = Backend("memory", maxsize=5)
    for i in range(100):
        own.set(f"k{i}", {"i": i}, 300)
        assert own.count() <= 5
    assert own.evictions == 95


def test_max_bytes_weighs_pickles_by_their_length():
    cachu.configure(memory_max_bytes=10_000)
    b = memory()
    value = Point("x" * 100)
    b.set("one", value, 300)
    assert b.nbytes == len(pickle.dumps(value))
    for i in range(1000):
        b.set(f"k{i}", Point("y" * 100 + str(i)), 300)
        assert b.nbytes <= 10_000
    assert b.count() == 10_000 // len(pickle.dumps(Point("y" * 100 + "999")))
    # A value heavier than the whole bound is not kept, nor what it replaced.
    b.set("k999", Point("z" * 20_000), 300)
    assert b.get("k999") is NO_VALUE
    assert b.nbytes <= 10_000


def test_values_kept_as_objects_weigh_the_documented_estimate():
    b = Backend("memory")
    cases = [
        (None, 0),
        (True, 0),
        (7, 32),
        (1.5, 24),
        ("abc", 49 + 3),
        (b"abcd", 33 + 4),
        ((1, "a"), 40 + 16 + 32 + 50),
        ([1, 2], 56 + 16 + 64),
        ({"a": 1}, 64 + 40 + 50 + 32),
        ({1, 2}, 200 + 32 + 64),
        ({"l": [1.0]}, 64 + 40 + 50 + (56 + 8 + 24)),
    ]
    for value, weight in cases:
        b.set("k", value, 300)
        assert b.nbytes == weight, value
    b.delete("k")
    assert b.nbytes == 0


def test_shrinking_at_run_time_evicts_down_and_lifting_lets_it_grow():
    @cachu.cache(ttl=300, backend="memory")
    def f(x):
        return x

    for i in range(200):
        f(i)
    b = memory()
    assert b.count() == 200 and b.bounds == (None, None, 60.0)
    for _ in range(3):
        f(7)  # used: kept over entries never read again
    cachu.configure(memory_maxsize=20)
    assert b is memory()  # the same instance, entries kept
    assert b.count() == 20 and b.evictions == 180
    assert cachu.cache_get(f, x=7) == 7
    cachu.configure(memory_max_bytes=32 * 5)
    assert b.count() == 5
    cachu.configure(memory_maxsize=None, memory_max_bytes=None, memory_sweep_interval=5)
    assert b.bounds == (None, None, 5.0)
    for i in range(300, 400):
        f(i)
    assert b.count() == 105


def test_other_packages_keep_their_own_bounds():
    other = cachu.get_backend("memory", "some_other_pkg", ttl=300)
    cachu.configure(memory_maxsize=3)
    for i in range(10):
        other.set(f"k{i}", i, 300)
        memory().set(f"k{i}", i, 300)
    assert other.count() == 10 and memory().count() == 3


def test_bounds_from_the_environment():
    env = dict(os.environ, CACHU_MEMORY_MAXSIZE="4", CACHU_MEMORY_MAX_BYTES="1000")
    env["CACHU_MEMORY_SWEEP_INTERVAL"] = "inf"
    code = textwrap.dedent(
        """
        import cachu
        b = cachu.get_backend("memory", ttl=300)
        for i in range(10):
            b.set(str(i), i, 300)
        print(b.count(), b.bounds)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "(4,", "1000,", "inf)"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("memory_maxsize", 0),
        ("memory_maxsize", -1),
        ("memory_maxsize", True),
        ("memory_maxsize", 2.5),
        ("memory_max_bytes", 0),
        ("memory_max_bytes", False),
        ("memory_sweep_interval", -1.0),
        ("memory_sweep_interval", math.nan),
    ],
)
def test_bad_bounds_are_refused_naming_the_option(option, value):
    b = memory()
    b.set("kept", 1, 300)
    with pytest.raises(ValueError, match=option):
        cachu.configure(**{option: value})
    assert b.get("kept") == 1 and b.bounds == (None, None, 60.0)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"maxsize": 0}, "memory_maxsize"),
        ({"maxsize": True}, "memory_maxsize"),
        ({"max_bytes": -5}, "memory_max_bytes"),
        ({"sweep_interval": math.nan}, "memory_sweep_interval"),
    ],
)
def test_backend_objects_refuse_bad_bounds(kwargs, option):
    with pytest.raises(ValueError, match=option):
        Backend("memory", **kwargs)
    with pytest.raises(ValueError, match=option):
        Backend("memory").set_bounds(**kwargs)


def test_only_memory_backends_report_and_take_bounds():
    null = Backend("null")
    assert (null.evictions, null.expired_swept, null.nbytes, null.bounds) == (None,) * 4
    with pytest.raises(ValueError, match="memory"):
        null.set_bounds(maxsize=3)


def test_the_bound_holds_under_eight_writing_threads():
    cachu.configure(memory_maxsize=64)

    @cachu.cache(ttl=300, backend="memory")
    def f(x):
        return {"x": x}

    b = memory()
    start = threading.Barrier(9)
    done = threading.Event()
    seen = []

    def writer(t):
        def run():
            start.wait()
            for i in range(3000):
                if i % 3 == 0:
                    cachu.cache_set(f, {"x": -i}, x=f"set{t}-{i}")
                elif i % 3 == 1:
                    b.set(f"raw{t}-{i}", i, 300)
                else:
                    assert f(f"{t}-{i % 500}") == {"x": f"{t}-{i % 500}"}

        return run

    def checker():
        start.wait()
        while True:  # at least one sample, even if the writers finish first
            seen.append(max(b.count(), len(list(b.keys())), cachu.cache_info(f).currsize))
            if done.is_set():
                break

    watcher = threading.Thread(target=checker, daemon=True)
    watcher.start()
    run_threads([writer(t) for t in range(8)])
    done.set()
    watcher.join(30)
    assert seen and max(seen) <= 64
    assert b.count() == 64


def test_a_scan_does_not_flush_the_hot_keys():
    cachu.configure(memory_maxsize=100)
    calls = []

    @cachu.cache(ttl=300, backend="memory")
    def f(x):
        calls.append(x)
        return x

    hot = range(50)
    for _ in range(10):
        for k in hot:
            f(k)
    # 5,000 keys used once, while the hot keys go on being used.
    for i in range(5000):
        f(f"scan{i}")
        f(i % 50)
    del calls[:]
    for k in hot:
        f(k)
    assert len(calls) <= 5, f"{len(calls)} of 50 hot keys were flushed by the scan"


def test_an_evicted_value_changes_nothing_for_its_holder():
    cachu.configure(memory_maxsize=2)

    @cachu.cache(ttl=300, backend="memory")
    def f(x):
        return {"x": x, "items": [x]}

    held = f(0)
    for i in range(1, 50):
        f(i)
    # Whatever the policy kept, a byte bound below any value evicts it all.
    cachu.configure(memory_max_bytes=1)
    assert cachu.cache_get(f, default=None, x=0) is None
    assert held == {"x": 0, "items": [0]}
    held["items"].append(1)
    assert f(0) == {"x": 0, "items": [0]}


def test_interval_zero_sweeps_expired_entries_on_the_next_write():
    cachu.configure(memory_sweep_interval=0)
    b = memory(ttl=1)
    for i in range(100):
        b.set(f"k{i}", "v" * 100, 1)
    wait_for(lambda: b.count() == 0, "entries expire")
    # (Idle stores with interval 0 are also swept once a second: the Rust
    # tests show the write alone does it.)
    # Writes read a coarse clock (a few ms behind): write until they see it.
    wait_for(lambda: b.set("new", 1, 300) or b.expired_swept == 100, "a write sweeps")
    assert b.nbytes == 32


def test_stores_are_swept_by_reads_without_any_write():
    cachu.configure(memory_sweep_interval=0.05)
    b = memory(ttl=1)
    for i in range(100):
        b.set(f"k{i}", "v", 1)

    # No thread sweeps: reads (here of a key never stored) carry sweeps on,
    # a slice per read (a pass is 4,096 slices).
    def read_some():
        return all(b.get("absent") is NO_VALUE for _ in range(50))

    wait_for(lambda: read_some() and b.expired_swept == 100, "reads sweep")
    assert b.nbytes == 0


def test_an_infinite_interval_never_sweeps():
    cachu.configure(memory_sweep_interval=math.inf)
    b = memory(ttl=1)
    b.set("k", 1, 1)
    wait_for(lambda: b.count() == 0, "the entry expires")
    for i in range(100):
        b.set(f"n{i}", 1, 300)
    assert b.expired_swept == 0 and b.nbytes == 101 * 32


def test_a_second_wave_of_short_lived_entries_reuses_the_first_waves_memory(tmp_path):
    code = textwrap.dedent(
        """
        import time
        import cachu

        def rss():
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])

        cachu.configure(memory_sweep_interval=0.2)
        # Entries outlive the wave that writes them, even on a loaded machine.
        b = cachu.get_backend("memory", ttl=5)
        base = rss()

        def wave(tag):
            for i in range(200_000):
                b.set(f"{tag}{i}", {"id": i, "name": "user" * 8}, 5)

        def drained():
            # The process goes on reading (no thread sweeps a silent one).
            deadline = time.monotonic() + 60
            while b.nbytes:
                assert time.monotonic() < deadline, "never swept"
                # A pass is 4,096 slices, one per call at most.
                for _ in range(200):
                    b.get("probe")
                time.sleep(0.05)

        wave("a")
        first = rss() - base
        drained()
        wave("b")
        second = rss() - base
        drained()
        print(first, second)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = map(int, out.stdout.split())
    assert first > 10_000  # KiB: the wave really took memory
    assert second < first * 1.4, (first, second)


def test_bounded_regions_keep_dogpile_and_ttl_behaviour():
    cachu.configure(memory_maxsize=10)
    calls = []
    gate = threading.Event()

    @cachu.cache(ttl=300, backend="memory")
    def slow(x):
        calls.append(x)
        gate.wait(30)
        return x

    threads = [threading.Thread(target=slow, args=(1,), daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: calls, "the first caller computes")
    gate.set()
    for t in threads:
        t.join(30)
    assert calls == [1]
    assert memory().count() == 1


def test_async_functions_are_bounded_too():
    import asyncio

    cachu.configure(memory_maxsize=20)

    @cachu.cache(ttl=300, backend="memory")
    async def f(x):
        return {"x": x}

    async def main():
        for i in range(200):
            assert await f(i) == {"x": i}
            assert (await cachu.async_cache_info(f)).currsize <= 20
        return await cachu.async_cache_info(f)

    info = asyncio.run(main())
    assert (info.misses, info.currsize) == (200, 20)
    assert memory().evictions == 180


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_sweeps_its_idle_stores():
    cachu.configure(memory_sweep_interval=0.05)
    parent = memory(ttl=1)
    parent.set("parent", 1, 300)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a store of its own, then only reads of another
        try:
            b = Backend("memory", sweep_interval=0.05)
            for i in range(50):
                b.set(f"k{i}", i, 1)
            deadline = time.monotonic() + HANG_GUARD
            while b.expired_swept < 50 and time.monotonic() < deadline:
                for _ in range(50):  # a pass is one slice per call
                    parent.get("parent")
                time.sleep(0.01)
            os.write(write, str(b.expired_swept).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        swept = f.read()
    os.waitpid(pid, 0)
    assert swept == "50"

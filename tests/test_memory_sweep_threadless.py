"""Memory caching starts no thread: a process using the memory backend, with
the default options or bounded ones, stays single-threaded, so that fork()
does not warn (Python 3.12+ counts OS threads, a Rust thread included) and a
suite run with ``-W error`` passes; and idle regions are still swept, by the
reads and writes of the process's other memory regions."""

import os
import subprocess
import sys
import textwrap
import time

import cachu
import pytest

HANG_GUARD = 60

# Run in a fresh interpreter, so that nothing of the test run (pytest's own
# threads, other tests' regions) is counted.
CHILD = textwrap.dedent(
    """
    import os
    import sys
    import time
    import warnings

    import cachu
    from cachu.backends import Backend

    def threads():
        return len(os.listdir("/proc/self/task"))

    before = threads()

    def use_memory_caching(tag):
        @cachu.cache(ttl=1, backend="memory")
        def f(x):
            return {"x": x, "items": [x]}

        @cachu.cache(ttl=300, backend="memory")
        def g(x):
            return x * 2

        for _ in range(3):
            for i in range(300):
                f(i)
                g(i)
        b = cachu.get_backend("memory", ttl=1)
        b.set(f"{tag}-k", 1, 1)
        b.get(f"{tag}-k")
        own = Backend("memory", maxsize=10, sweep_interval=0.01)
        for i in range(100):
            own.set(f"k{i}", i, 0.01)
        # Let entries expire and sweeps fall due, then read and write on.
        deadline = time.monotonic() + 60
        while own.nbytes:
            assert time.monotonic() < deadline, "never swept"
            time.sleep(0.01)
            for _ in range(50):  # a pass is a slice per call, 4,096 slices
                own.get("k0")
                g(1)

    use_memory_caching("default")
    cachu.configure(memory_maxsize=100, memory_max_bytes=1 << 20, memory_sweep_interval=0.01)
    use_memory_caching("bounded")
    after = threads()

    # CPython 3.12+ warns here if the process has another OS thread (and
    # swallows the warning if a filter turns it into an error): record it.
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        pid = os.fork()
        if pid == 0:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    print(before, after, os.waitstatus_to_exitcode(status), len(warned))
    for w in warned:
        print(w.message, file=sys.stderr)
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_memory_caching_leaves_the_process_single_threaded_and_fork_silent():
    out = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", CHILD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    before, after, child, warnings = map(int, out.stdout.split())
    assert (before, after, child, warnings) == (1, 1, 0, 0), out.stderr
    assert out.stderr == ""


def test_an_idle_region_is_swept_by_reads_of_another_region():
    cachu.configure(memory_sweep_interval=0.05)
    idle = cachu.get_backend("memory", ttl=1)
    for i in range(100):
        idle.set(f"k{i}", {"i": i}, 1)
    busy = cachu.get_backend("memory", ttl=300)
    busy.set("hot", 1, 300)
    reads = 0
    deadline = time.monotonic() + HANG_GUARD
    # From here on, no call touches `idle`: only hits on `busy`.
    while idle.expired_swept < 100:
        assert time.monotonic() < deadline, "the idle region was never swept"
        for _ in range(50):
            assert busy.get("hot") == 1
        reads += 50
        time.sleep(0.01)
    assert idle.nbytes == 0
    # A slice per call at most: a pass over the 4,096 slices (32 shards of 128
    # parts) takes as many calls.
    assert reads >= 4096


def test_decorated_hits_sweep_an_idle_function_region():
    cachu.configure(memory_sweep_interval=0.05)

    @cachu.cache(ttl=1, backend="memory")
    def short(x):
        return [x]

    @cachu.cache(ttl=300, backend="memory")
    def hot(x):
        return {"x": x}

    for i in range(200):
        short(i)
    hot(1)
    region = cachu.get_backend("memory", ttl=1)
    deadline = time.monotonic() + HANG_GUARD
    while region.expired_swept < 200:
        assert time.monotonic() < deadline, "the idle region was never swept"
        for _ in range(50):
            hot(1)
        time.sleep(0.01)
    assert cachu.cache_info(hot).hits > 0 and region.nbytes == 0

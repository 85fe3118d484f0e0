"""Dogpile prevention and threads (memory backend)."""

import json
import subprocess
import sys
import textwrap
import threading
import time

import cachu
from helpers import run_threads

JOIN_TIMEOUT = 20


def test_dogpile_one_computation_for_many_threads():
    lock = threading.Lock()
    calls = []

    @cachu.cache(ttl=300)
    def slow_shared(key):
        with lock:
            calls.append(key)
        time.sleep(0.2)
        return {"key": key, "computed": len(calls)}

    n = 50
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        def run():
            barrier.wait(JOIN_TIMEOUT)
            results[i] = slow_shared("k")

        return run

    run_threads([worker(i) for i in range(n)])
    assert calls == ["k"]
    assert all(r == {"key": "k", "computed": 1} for r in results)
    info = cachu.cache_info(slow_shared)
    assert info.misses == 1
    assert info.hits == n - 1
    assert info.currsize == 1


def test_different_keys_do_not_block_each_other():
    """While one key is being computed, another key can be computed and read."""
    entered = threading.Event()
    release = threading.Event()
    order = []

    @cachu.cache(ttl=300)
    def gated(key):
        if key == "slow":
            entered.set()
            assert release.wait(JOIN_TIMEOUT), "never released"
        order.append(key)
        return key

    gated("cached")  # an existing entry, read while 'slow' is in progress

    def slow():
        gated("slow")

    def fast():
        assert entered.wait(JOIN_TIMEOUT)
        assert gated("fast") == "fast"  # a miss on another key
        assert gated("cached") == "cached"  # a hit on another key
        order.append("fast-done")
        release.set()

    run_threads([slow, fast])
    assert order == ["cached", "fast", "fast-done", "slow"]


def test_different_keys_run_in_parallel():
    """Two misses on different keys are computed at the same time: each
    function body waits for the other to be running too (a barrier inside
    the function), which only works if neither key waits for the other."""
    inside = threading.Barrier(2, timeout=JOIN_TIMEOUT)

    @cachu.cache(ttl=300)
    def both_at_once(key):
        inside.wait()  # BrokenBarrierError if the other never gets in
        return key

    def call(key):
        def run():
            assert both_at_once(key) == key

        return run

    run_threads([call("a"), call("b")])
    assert cachu.cache_info(both_at_once).misses == 2


def test_exception_releases_the_key_lock():
    attempts = []

    @cachu.cache(ttl=300)
    def flaky(key):
        attempts.append(key)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return key

    try:
        flaky("x")
    except RuntimeError:
        pass
    result = []
    # well below the 10 s lock_timeout: a leaked lock would make this time out
    run_threads([lambda: result.append(flaky("x"))], timeout=5)
    assert result == ["x"]
    assert attempts == ["x", "x"]


def test_failed_computation_lets_a_waiter_compute():
    lock = threading.Lock()
    attempts = []

    @cachu.cache(ttl=300)
    def fails_once(key):
        with lock:
            attempts.append(key)
            first = len(attempts) == 1
        time.sleep(0.2)
        if first:
            raise RuntimeError("first attempt fails")
        return "ok"

    n = 6
    barrier = threading.Barrier(n)
    results, errors = [], []

    def worker():
        barrier.wait(JOIN_TIMEOUT)
        try:
            results.append(fails_once("k"))
        except RuntimeError as exc:
            errors.append(exc)

    run_threads([worker] * n)
    assert len(errors) == 1
    assert results == ["ok"] * (n - 1)
    assert len(attempts) == 2


def test_waiter_gives_up_after_lock_timeout():
    """A caller waiting on a key longer than lock_timeout runs the function itself."""
    cachu.configure(lock_timeout=0.3)
    entered = threading.Event()
    release = threading.Event()
    calls = []

    @cachu.cache(ttl=300)
    def held(key):
        calls.append(key)
        if len(calls) == 1:
            entered.set()
            assert release.wait(JOIN_TIMEOUT), "never released"
            return "first"
        return "second"

    out = {}
    first = threading.Thread(target=lambda: out.setdefault("first", held("k")), daemon=True)
    first.start()
    try:
        assert entered.wait(JOIN_TIMEOUT)
        run_threads([lambda: out.setdefault("waiter", held("k"))], timeout=5)
        assert out == {"waiter": "second"}
    finally:
        release.set()
        first.join(JOIN_TIMEOUT)
    assert out == {"waiter": "second", "first": "first"}
    assert calls == ["k", "k"]


def test_many_threads_many_keys():
    lock = threading.Lock()
    calls = {}

    @cachu.cache(ttl=300)
    def per_key(k):
        with lock:
            calls[k] = calls.get(k, 0) + 1
        return [k]

    def worker(seed):
        def run():
            for i in range(200):
                k = (seed * 7 + i) % 16
                assert per_key(k) == [k]

        return run

    run_threads([worker(s) for s in range(8)])
    assert calls == {k: 1 for k in range(16)}


def test_backend_from_many_threads():
    mem = cachu.get_backend("memory", ttl=300)

    def worker(t):
        def run():
            for i in range(200):
                key = f"t{t}:{i % 10}"
                mem.set(key, {"t": t, "i": i}, 300)
                got = mem.get(key)
                assert got is cachu.backends.NO_VALUE or got["t"] == t
                if i % 50 == 0:
                    mem.count("t*")
                    list(mem.keys(f"t{t}:*"))

        return run

    run_threads([worker(t) for t in range(6)])
    assert mem.count() == 60


GIL_PROBE = """
import json
import threading
import time

import cachu

entered = threading.Event()
release = threading.Event()
calls = []


@cachu.cache(ttl=300)
def slow_miss(x):
    calls.append(x)
    entered.set()
    release.wait(30)
    return x * 2


results = {}
a = threading.Thread(target=lambda: results.__setitem__('a', slow_miss(21)), daemon=True)
a.start()
assert entered.wait(30)
# b finds the key being computed and waits for the dogpile lock
b = threading.Thread(target=lambda: results.__setitem__('b', slow_miss(21)), daemon=True)
b.start()
time.sleep(0.2)
# this thread must still be able to run Python code while a computes and b waits
spins = 0
deadline = time.monotonic() + 0.1
while time.monotonic() < deadline:
    spins += 1
release.set()
a.join(30)
b.join(30)
print(json.dumps({'spins': spins, 'calls': len(calls), 'a': results.get('a'),
                  'b': results.get('b')}))
"""


def test_waiting_for_a_computation_does_not_hold_the_gil(clean_env):
    """Run in a child process: if a waiter held the GIL, the child would hang."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(GIL_PROBE)],
            env=clean_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("child hung: a thread waiting on a key holds the GIL") from exc
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["spins"] > 0
    assert out["calls"] == 1
    assert out["a"] == 42
    assert out["b"] == 42


def test_ctrl_c_ends_a_wait_for_another_threads_computation(ctrl_c):
    """The main thread, waiting (without the GIL) for a key another thread is
    computing, still gets KeyboardInterrupt: the wait does not hold it back
    until lock_timeout."""
    import _thread

    import pytest

    cachu.configure(lock_timeout=60)
    entered, release = threading.Event(), threading.Event()

    @cachu.cache(ttl=300)
    def slow(x):
        entered.set()
        release.wait(3 * JOIN_TIMEOUT)  # only `release` ends it
        return x

    holder = threading.Thread(target=slow, args=(1,), daemon=True)
    holder.start()
    assert entered.wait(JOIN_TIMEOUT)
    interrupt = threading.Timer(0.2, _thread.interrupt_main)
    # Should the wait ignore the interrupt, end it anyway (the holder
    # finishes), so that the test fails instead of hanging.
    safety = threading.Timer(JOIN_TIMEOUT, release.set)
    interrupt.start()
    safety.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            slow(1)
        # Interrupted while the other thread was still computing.
        assert not release.is_set()
    finally:
        release.set()
        interrupt.cancel()
        safety.cancel()
        holder.join(JOIN_TIMEOUT)
    assert slow(1) == 1

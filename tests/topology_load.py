"""Load for the failover tests: threads calling a cached function over a
set of keys while a test kills, freezes or reshards nodes, counting every
completed call and every error (there must be none: fail_open)."""

import threading
import time

import cachu
from redis_topology import wait_until

KEYS = range(64)
THREADS = 8


class Load:
    """THREADS threads calling ``f`` over KEYS until stopped, recording
    every exception (there must be none: fail_open) and every completed
    call."""

    def __init__(self, f):
        self.f = f
        self.stop = threading.Event()
        self.completed = 0
        self.wrong = 0
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(THREADS)]

    def run(self):
        while not self.stop.is_set():
            for x in KEYS:
                try:
                    ok = self.f(x) == {"x": x}
                except BaseException as e:  # reported by the test
                    with self.lock:
                        self.errors.append(e)
                    return
                with self.lock:
                    self.completed += 1
                    self.wrong += not ok

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def completed_at_least(self, n):
        wait_until(f"{n} completed calls", lambda: self.completed >= n, timeout=60)

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)
            assert not t.is_alive(), "a caller hung"


def counted(pkg):
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(x):
        runs.append(x)
        return {"x": x}

    return f, runs


def assert_caching_resumed(f, runs, timeout=30):
    """Caching resumes by itself: within a bounded wait (the circuit
    breaker's back-off after the outage lets a probe through within a few
    seconds), a pass over every key is followed by one that computes
    nothing."""
    deadline = time.monotonic() + timeout
    while True:
        for x in KEYS:
            assert f(x) == {"x": x}
        before = len(runs)
        for x in KEYS:
            assert f(x) == {"x": x}
        if len(runs) == before:
            return
        assert time.monotonic() < deadline, "values are not cached after the failover"
        time.sleep(0.1)

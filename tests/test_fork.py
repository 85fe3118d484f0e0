"""fork() while other threads are inside the file, memory and Redis
backends (Redis with and without a near cache): every child finishes (none
hangs on a lock copied from the parent), the parent carries on, and the
databases stay intact. 200 forks
from a process with 4 threads hammering the backends; a child that does
not exit within its (generous) bound counts as hung."""

import os
import signal
import sqlite3
import threading
import time

import cachu
import pytest

FORKS = 200
CHILD_BOUND = 30  # seconds: a child waits out a busy database at worst


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("near", [0, 1000], ids=["plain", "near-cache"])
def test_forks_with_busy_threads_never_hang(tmp_path, server, r, near):
    # With a near cache, its tracking task (no GIL) also takes the near
    # store's locks while the parent's threads call.
    cachu.configure(file_dir=str(tmp_path), redis_url=server.url, redis_near_cache=near)

    @cachu.cache(ttl=300, backend="file")
    def on_file(x):
        return {"x": x}

    @cachu.cache(ttl=300, backend="memory")
    def on_memory(x):
        return {"x": x}

    @cachu.cache(ttl=300, backend="redis")
    def on_redis(x):
        return {"x": x}

    stop = threading.Event()
    errors = []

    def hammer(fn, base):
        i = 0
        try:
            while not stop.is_set():
                assert fn((base + i) % 500) == {"x": (base + i) % 500}
                i += 1
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=hammer, args=(fn, k * 1000), daemon=True)
        for k, fn in enumerate([on_file, on_file, on_memory, on_redis])
    ]
    for t in threads:
        t.start()
    hung = failed = 0
    try:
        for n in range(FORKS):
            time.sleep(0.002)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    ok = (
                        on_file(10**6 + n) == {"x": 10**6 + n}
                        and on_memory(n) == {"x": n}
                        and on_redis(10**6 + n) == {"x": 10**6 + n}
                    )
                    code = 0 if ok else 2
                except BaseException:
                    code = 3
                os._exit(code)
            end = time.monotonic() + CHILD_BOUND
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    failed += os.waitstatus_to_exitcode(status) != 0
                    break
                if time.monotonic() > end:
                    hung += 1
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join(CHILD_BOUND)
    assert not errors, errors[0]
    assert (hung, failed) == (0, 0), f"{hung} hung and {failed} failed children of {FORKS}"
    # The parent carries on, and the database is intact.
    assert on_file(1) == {"x": 1}
    db = tmp_path / "test_fork_cache5min.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    cachu.decorator.clear_backends()

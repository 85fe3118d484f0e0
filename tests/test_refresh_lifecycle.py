"""Background refreshes (stale_while_revalidate) across processes, under
cancellation, fork and interpreter shutdown. Real processes, a real Redis;
counts and exit codes, never durations (beyond generous hang guards)."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import cachu
import pytest

WAIT = 30
HERE = os.path.dirname(os.path.abspath(__file__))


def wait_until(predicate, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


# -- one refresh across processes (Redis) --------------------------------------------------

REFRESHER = textwrap.dedent(
    """
    import sys, time, redis, cachu
    url, count_key = sys.argv[1], sys.argv[2]
    peer = redis.Redis.from_url(url)
    cachu.configure(backend="redis", redis_url=url, package="shared_app")

    @cachu.cache(ttl=1, stale_while_revalidate=60, package="shared_app")
    def quote(symbol):
        n = peer.incr(count_key)
        time.sleep(0.3)  # long enough for every process to find it stale
        return n

    print("ready", flush=True)
    sys.stdin.readline()
    served = {quote("ACME") for _ in range(5)}
    print(sorted(served), flush=True)
    # refresh threads are not daemons: the process exits once they are done
    """
)


def test_one_refresh_across_four_processes(server, r):
    url = server.url
    cachu.configure(backend="redis", redis_url=url, package="shared_app")

    @cachu.cache(ttl=1, stale_while_revalidate=60, package="shared_app")
    def quote(symbol):
        return r.incr("runs")

    assert quote("ACME") == 1
    time.sleep(1.1)  # stale now
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", REFRESHER, url, "runs"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        for p in procs:  # all at once
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.stdout.readline().strip() for p in procs]
        for p in procs:
            assert p.wait(WAIT) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.stdin.close()
            p.stdout.close()
    # Every caller got a value at once (the stale 1, or the refreshed 2)...
    for out in outputs:
        assert set(eval(out)) <= {1, 2}, out
    # ...and one refresh ran, in one of the four processes.
    assert int(r.get("runs")) == 2
    wait_until(lambda: not r.keys("lock:*"), "the refresh's lock released")


# -- cancellation of the refreshing task -----------------------------------------------------


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_cancelled_refresh_releases_its_claim_and_lock(backend, request):
    if backend == "redis":
        server = request.getfixturevalue("server")
        raw = request.getfixturevalue("r")
        cachu.configure(backend="redis", redis_url=server.url)
    else:
        raw = None
        cachu.configure(backend="memory")
    from cachu import _async

    runs = []
    hold = {}

    @cachu.cache(ttl=1, stale_while_revalidate=60)
    async def fetch(key):
        runs.append(key)
        if len(runs) > 1:
            await hold["gate"].wait()
        return len(runs)

    async def main():
        hold["gate"] = asyncio.Event()
        assert await fetch("k") == 1
        await asyncio.sleep(1.1)
        assert await fetch("k") == 1  # stale; one refresh starts
        await asyncio.wait_for(_until(lambda: len(runs) == 2), WAIT)
        (task,) = list(_async._refreshes)
        task.cancel()
        await asyncio.wait_for(_until(lambda: not _async._refreshes), WAIT)
        if raw is not None:
            await asyncio.wait_for(_until(lambda: not raw.keys("lock:*")), WAIT)
        # The claim is free again: the next stale caller starts a refresh.
        hold["gate"].set()
        assert await fetch("k") == 1
        await asyncio.wait_for(_until(lambda: len(runs) == 3), WAIT)
        await asyncio.wait_for(_until(lambda: not _async._refreshes), WAIT)
        assert await fetch("k") == 3

    asyncio.run(main())


async def _until(predicate):
    while not predicate():
        await asyncio.sleep(0.01)


# -- fork during a refresh -------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_fork_during_a_refresh(tmp_path):
    cachu.configure(backend="memory")
    gate = threading.Event()
    gate.set()
    runs = []

    @cachu.cache(ttl=1, stale_while_revalidate=60)
    def fetch(key):
        runs.append(key)
        assert gate.wait(WAIT)
        return len(runs)

    assert fetch("k") == 1
    time.sleep(1.1)
    gate.clear()
    assert fetch("k") == 1  # the refresh starts and stays held
    wait_until(lambda: len(runs) == 2, "the refresh started")
    pid = os.fork()
    if pid == 0:  # the child: its copy of the refresh thread does not exist
        code = 1
        try:
            gate.set()
            # A stale value at once, and a refresh of its own (the parent's
            # claim does not hold here).
            if fetch("k") == 1:
                deadline = time.monotonic() + WAIT
                while fetch("k") == 1 and time.monotonic() < deadline:
                    time.sleep(0.01)
                code = 0 if fetch("k") == 3 else 2
        finally:
            os._exit(code)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            assert time.monotonic() < deadline, "the child hung"
            time.sleep(0.01)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        gate.set()
        if not done:
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: fetch("k") == 2, "the parent's refresh completes")


# -- interpreter shutdown ---------------------------------------------------------------------

SHUTDOWN = textwrap.dedent(
    """
    import asyncio, sys, time, cachu
    marker = sys.argv[1]

    @cachu.cache(ttl=1, stale_while_revalidate=60)
    def sync_fetch(key):
        time.sleep(0.3)
        open(marker, "a").write("sync\\n")
        return key

    @cachu.cache(ttl=1, stale_while_revalidate=60)
    async def async_fetch(key):
        await asyncio.sleep(0.3)
        open(marker, "a").write("async\\n")
        return key

    async def main():
        await async_fetch("a")
        await asyncio.sleep(1.1)
        await async_fetch("a")  # refresh task in flight when the loop closes

    sync_fetch("s")
    time.sleep(1.1)
    sync_fetch("s")  # refresh thread in flight at exit
    asyncio.run(main())
    print("leaving", flush=True)
    """
)


def test_exit_with_refreshes_in_flight(tmp_path):
    marker = tmp_path / "marker"
    proc = subprocess.run(
        [sys.executable, "-c", SHUTDOWN, str(marker)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "leaving" in proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    # The sync refresh was let finish; the async one was cancelled with its
    # loop (asyncio.run cancels pending tasks) or finished first.
    lines = marker.read_text().split()
    assert lines.count("sync") == 2
    assert lines.count("async") <= 2

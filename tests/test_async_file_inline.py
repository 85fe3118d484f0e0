"""Async file hits run inline on the event loop (a few microseconds of
SQLite); only a read that would wait (another process holds the database)
goes to the loop's thread pool, so the loop is never blocked by it."""

import asyncio
import concurrent.futures
import subprocess
import sys

import cachu
import pytest

WAIT = 30

# Holds the database exclusively (readers too): a read must wait for it.
_EXCLUSIVE_HOLDER = """
import sqlite3, sys, threading
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
conn.execute("PRAGMA locking_mode=EXCLUSIVE")
conn.execute("BEGIN EXCLUSIVE")
conn.execute("UPDATE cache SET created_at = created_at")
print("locked", flush=True)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), done.set()), daemon=True).start()
done.wait(30)
conn.execute("COMMIT")
conn.close()
"""


class CountingPool(concurrent.futures.ThreadPoolExecutor):
    def __init__(self):
        super().__init__(max_workers=2)
        self.jobs = 0

    def submit(self, *args, **kwargs):
        self.jobs += 1
        return super().submit(*args, **kwargs)


@pytest.fixture
def pool():
    p = CountingPool()
    yield p
    p.shutdown(wait=True)


@pytest.mark.asyncio
async def test_async_file_hits_use_no_thread(tmp_path, pool):
    asyncio.get_running_loop().set_default_executor(pool)
    cachu.configure(file_dir=str(tmp_path))
    calls = []

    @cachu.cache(ttl=300, backend="file")
    async def load(i):
        calls.append(i)
        return {"i": i}

    for i in range(8):
        await load(i)
    await load(0)  # a connection is pooled now
    before = pool.jobs
    for _ in range(5):
        for i in range(8):
            assert await load(i) == {"i": i}
    assert calls == list(range(8))
    assert pool.jobs == before, "hits went through the thread pool"


@pytest.mark.asyncio
async def test_validate_runs_inline_too(tmp_path, pool):
    asyncio.get_running_loop().set_default_executor(pool)
    cachu.configure(file_dir=str(tmp_path))

    @cachu.cache(ttl=300, backend="file", validate=lambda e: e.value["ok"])
    async def load(i):
        return {"ok": i != 3}

    for i in range(5):
        await load(i)
    await load(0)
    before = pool.jobs
    assert [await load(i) for i in (0, 1, 2, 4)] == [{"ok": True}] * 4
    assert pool.jobs == before


@pytest.mark.asyncio
async def test_a_read_that_would_wait_leaves_the_loop_free(tmp_path):
    """No idle connection, another process holding the database: the read
    goes to the pool and waits there while the loop runs other tasks."""
    cachu.configure(file_dir=str(tmp_path))

    @cachu.cache(ttl=300, backend="file")
    async def load(i):
        return {"i": i}

    await load(1)
    # An exclusive holder can only take a database nobody else has open
    # (WAL): let go of ours; the next read then has to open and wait.
    cachu.get_backend("file", ttl=300).close()
    (db,) = tmp_path.glob("*.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", _EXCLUSIVE_HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        beats = 0
        enough = asyncio.Event()
        done = False

        async def heartbeat():
            nonlocal beats
            while not done:
                beats += 1
                if beats >= 5:
                    enough.set()
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        hit = asyncio.create_task(load(1))
        # The read waits on the lock, off the loop: other tasks keep running.
        await asyncio.wait_for(enough.wait(), WAIT)
        assert not hit.done()
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert await asyncio.wait_for(hit, WAIT) == {"i": 1}
        done = True
        await asyncio.wait_for(beat, WAIT)
    finally:
        holder.stdin.close()
        holder.wait(WAIT)
        holder.stdout.close()

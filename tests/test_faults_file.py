"""The file backend fails open: a full disk, a read-only filesystem, a
directory removed or replaced never cost a decorated call its result; one
warning is logged per outage and region, and caching resumes by itself once
the fault clears. The faults are real: a small tmpfs (mounted as root; where
mounting is refused the test says so and skips), a directory removed,
remounted read-only, replaced by a file."""

import logging
import os
import shutil
import subprocess
import time

import cachu
import pytest
from cachu.decorator import clear_backends

DEADLINE = 30  # seconds a fault may take to be noticed or to clear (a hang guard)


@pytest.fixture(autouse=True)
def _forget_backends():
    yield
    clear_backends()


def outage_warnings(caplog):
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("cachu") and "unavailable" in r.msg
    ]


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MiB tmpfs; unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): run as root to test")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def remount(mnt, mode):
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True)


def cached_counter(**opts):
    calls = []

    @cachu.cache(ttl=300, backend="file", **opts)
    def f(x, size=0):
        calls.append(x)
        return {"x": x, "pad": b"p" * size}

    return f, calls


def until(predicate):
    """Poll `predicate` (a call of the cached function, say) until it holds;
    fail rather than hang."""
    end = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < end, "the fault was not noticed or did not clear"
        time.sleep(0.02)


def caches(f, calls, x):
    """Whether a second call of ``f(x)`` is a hit (the cache works)."""
    f(x)
    n = len(calls)
    f(x)
    return len(calls) == n


def fill(mnt):
    """Fill the filesystem completely with a filler file; returns its path."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_costs_no_result_and_caching_resumes(tmpfs, caplog):
    caplog.set_level(logging.INFO)
    cachu.configure(file_dir=str(tmpfs))
    f, calls = cached_counter()
    assert f(0) == {"x": 0, "pad": b""}
    filler = fill(tmpfs)
    results = [f(i, size=20_000) for i in range(1, 201)]
    assert [r["x"] for r in results] == list(range(1, 201))
    assert calls == list(range(201))
    assert len(outage_warnings(caplog)) == 1
    filler.unlink()
    # Space is back: the next stores work and are hits after.
    until(lambda: caches(f, calls, 500))
    assert f(0)["x"] == 0
    assert len(outage_warnings(caplog)) == 1


def test_a_small_working_set_rewritten_many_times_fits_a_small_disk(tmpfs, caplog):
    # 100 KB of values overwritten 3,000 times: the write-ahead log must not
    # outgrow a 2 MiB filesystem (it is checkpointed and truncated).
    caplog.set_level(logging.WARNING)
    cachu.configure(file_dir=str(tmpfs))
    f, calls = cached_counter()
    for n in range(3000):
        assert f(n % 10, size=10_000, _overwrite_cache=True)["x"] == n % 10
    assert outage_warnings(caplog) == []
    before = len(calls)
    for i in range(10):
        assert f(i, size=10_000)["x"] == i
    assert len(calls) == before  # all hits
    used = sum(p.stat().st_size for p in tmpfs.iterdir())
    assert used < 2 * 1024 * 1024


def test_the_directory_removed_and_recreated(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    d = tmp_path / "cache"
    d.mkdir()
    cachu.configure(file_dir=str(d))
    f, calls = cached_counter()
    assert f(1)["x"] == 1
    shutil.rmtree(d)
    # Every call returns its result; the outage is noticed (once).
    until(lambda: f(2)["x"] == 2 and len(outage_warnings(caplog)) == 1)
    for _ in range(20):
        assert f(3)["x"] == 3
    assert len(outage_warnings(caplog)) == 1
    assert not d.exists()
    d.mkdir()
    # Back: stores work again, and are read back.
    until(lambda: caches(f, calls, 4))
    assert (d / "test_faults_file_cache5min.db").exists()
    assert len(outage_warnings(caplog)) == 1


def test_a_directory_missing_at_first_use(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    d = tmp_path / "later"
    d.mkdir()
    cachu.configure(file_dir=str(d))
    d.rmdir()
    f, calls = cached_counter()
    assert f(1)["x"] == 1 and f(1)["x"] == 1
    assert calls == [1, 1]
    assert len(outage_warnings(caplog)) == 1
    d.mkdir()
    until(lambda: caches(f, calls, 2))  # after the breaker's back-off


def test_the_directory_replaced_by_a_file(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    d = tmp_path / "cache"
    d.mkdir()
    cachu.configure(file_dir=str(d))
    f, calls = cached_counter()
    f(1)
    shutil.rmtree(d)
    d.write_text("not a directory")
    until(lambda: f(2)["x"] == 2 and len(outage_warnings(caplog)) == 1)
    d.unlink()
    d.mkdir()
    until(lambda: caches(f, calls, 5))


def test_a_read_only_filesystem(tmpfs, caplog):
    caplog.set_level(logging.WARNING)
    cachu.configure(file_dir=str(tmpfs))
    f, calls = cached_counter()
    assert f(1)["x"] == 1
    clear_backends()  # a filesystem with files open for writing stays writable
    remount(tmpfs, "ro")
    try:
        results = [f(i)["x"] for i in range(2, 50)]
        assert results == list(range(2, 50))
        assert f(1)["x"] == 1  # what was stored may still be read
        assert len(outage_warnings(caplog)) == 1
    finally:
        remount(tmpfs, "rw")
    until(lambda: caches(f, calls, 60))


def test_async_calls_fail_open_too(tmp_path, caplog):
    import asyncio

    caplog.set_level(logging.WARNING)
    d = tmp_path / "cache"
    d.mkdir()
    cachu.configure(file_dir=str(d))
    calls = []

    @cachu.cache(ttl=300, backend="file")
    async def g(x):
        calls.append(x)
        return x

    async def main():
        assert await g(1) == 1
        shutil.rmtree(d)
        end = time.monotonic() + DEADLINE
        while not outage_warnings(caplog):
            assert time.monotonic() < end
            assert await g(2) == 2
            await asyncio.sleep(0.02)

    asyncio.run(main())


def test_fail_open_false_raises_backend_unavailable(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    cachu.configure(file_dir=str(d), fail_open=False)
    f, _ = cached_counter()
    f(1)
    shutil.rmtree(d)
    end = time.monotonic() + DEADLINE
    with pytest.raises(cachu.BackendUnavailableError, match="does not exist"):
        while True:
            assert time.monotonic() < end
            f(2)
            time.sleep(0.02)


def test_crud_and_backend_objects_still_raise(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    cachu.configure(file_dir=str(d))
    f, _ = cached_counter()
    f(1)
    backend = cachu.get_backend("file", ttl=300)
    clear_backends()
    shutil.rmtree(d)
    with pytest.raises(cachu.CacheError):
        f.get(x=1)
    with pytest.raises(cachu.BackendUnavailableError):
        cachu.get_backend("file", ttl=300).set("k", 1, 60)
    del backend
    assert not os.path.exists(d)


LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_database_locked_past_the_busy_timeout(tmp_path, caplog):
    import sys

    caplog.set_level(logging.WARNING)
    cachu.configure(file_dir=str(tmp_path))
    f, calls = cached_counter()
    assert f(1)["x"] == 1
    db = tmp_path / "test_faults_file_cache5min.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # Another process holds the write lock for good: reading still
        # works, the store waits out the busy timeout and gives up.
        assert f(2)["x"] == 2
        assert f(1)["x"] == 1
        assert len(outage_warnings(caplog)) == 1
    finally:
        holder.communicate("", timeout=DEADLINE)
    until(lambda: caches(f, calls, 3))

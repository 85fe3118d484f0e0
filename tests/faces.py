"""One behaviour, every backend and both faces: a test written against a
``Face`` runs the same calls as sync calls (threads) or as coroutines (tasks
of one long-lived event loop in a thread of its own, so background refresh
tasks outlive a single call), and a ``configure_backend`` puts a package on
memory, file or Redis. The function under test is written once, as plain
sync ``work(x)``; the async face awaits it in a worker thread, so a test can
hold it on a ``threading.Event`` without blocking the loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading

import cachu

WAIT = 30  # hang guard, seconds


class SyncFace:
    name = "sync"

    def cache(self, work, **options):
        @cachu.cache(**options)
        def fn(x):
            return work(x)

        return fn

    def call(self, fn, x):
        box = self.many(fn, 1, x)
        return box[0]

    def many(self, fn, n, x):
        """``n`` concurrent calls ``fn(x)``; their results (or exceptions)."""
        out = [None] * n
        start = threading.Barrier(n)

        def run(i):
            start.wait(WAIT)
            try:
                out[i] = fn(x)
            except Exception as e:
                out[i] = e

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
            assert not t.is_alive(), "a call did not return"
        return out

    def decorate(self, work, **options):
        """``@cache(**options)`` on ``work`` itself (any signature)."""
        return cachu.cache(**options)(work)

    def wait(self, outcome):
        """What a call of either face gave: here, already its result."""
        return outcome

    def crud(self, name, *args, **kwargs):
        """``cachu.<name>(...)``, e.g. ``crud('cache_get', fn, x=1)``."""
        return getattr(cachu, name)(*args, **kwargs)

    def backend(self, name, ttl):
        """The backend object of this package's region (sync face)."""
        return cachu.get_backend(name, ttl=ttl)

    def keys(self, backend_object, pattern=None):
        return sorted(backend_object.keys(pattern))

    def close(self):
        pass


class AsyncFace:
    name = "async"

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def cache(self, work, **options):
        @cachu.cache(**options)
        async def fn(x):
            return await asyncio.to_thread(work, x)

        return fn

    def call(self, fn, x):
        return self.many(fn, 1, x)[0]

    def many(self, fn, n, x):
        async def all_of():
            return await asyncio.gather(*(fn(x) for _ in range(n)), return_exceptions=True)

        return asyncio.run_coroutine_threadsafe(all_of(), self.loop).result(WAIT)

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def decorate(self, work, **options):
        """``@cache(**options)`` on a coroutine function with ``work``'s name
        and signature, which runs ``work`` in a worker thread."""

        @functools.wraps(work)
        async def twin(*args, **kwargs):
            return await asyncio.to_thread(work, *args, **kwargs)

        return cachu.cache(**options)(twin)

    def wait(self, outcome):
        """What a call of either face gave: here, a coroutine to run on the
        loop (anything else is returned as it is)."""
        return self.run(outcome) if inspect.isawaitable(outcome) else outcome

    def crud(self, name, *args, **kwargs):
        """``await cachu.async_<name>(...)``, e.g. ``crud('cache_get', fn, x=1)``."""
        return self.run(getattr(cachu, f"async_{name}")(*args, **kwargs))

    def backend(self, name, ttl):
        """The backend object of this package's region (async face)."""
        return self.run(cachu.get_async_backend(name, ttl=ttl))

    def keys(self, backend_object, pattern=None):
        async def listed():
            return sorted([k async for k in backend_object.keys(pattern)])

        return self.run(listed())

    def close(self):
        async def drain():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if tasks:
                await asyncio.wait(tasks, timeout=WAIT)

        self.run(drain())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


def make_face(name):
    return SyncFace() if name == "sync" else AsyncFace()


def configure_backend(backend, tmp_path, server=None, **options):
    """Put the calling test module's package on ``backend``."""
    settings = dict(options, backend=backend, file_dir=str(tmp_path))
    if backend == "redis":
        settings["redis_url"] = server.url
    return cachu.configure(**settings)


class Work:
    """The function under test: counts its runs, returns the run number, and
    can be held (``hold``) or made to fail (``fail``)."""

    def __init__(self):
        self.runs = 0
        self.lock = threading.Lock()
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.fail = False

    def __call__(self, x):
        with self.lock:
            self.runs += 1
            n = self.runs
        self.entered.set()
        assert self.open.wait(WAIT), "held too long"
        if self.fail:
            raise RuntimeError(f"run {n} failed")
        return n

    def hold(self):
        self.entered.clear()
        self.open.clear()

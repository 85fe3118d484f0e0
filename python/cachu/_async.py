"""Caching of coroutine functions: the Python half of the call protocol's
async driver.

The wrapper stays a real ``async def`` (so ``inspect.iscoroutinefunction``
holds). A memory hit is one engine call (``_acall``); anything else is an
``AsyncCall``, the engine's run of the call protocol for this call, which
performs inline what never waits and tells this driver, as a named
``AsyncStep``, what it must do on the event loop: await the function, take
the key's lock among this loop's tasks, run a blocking SQLite step in the
loop's thread pool, or await a Redis round trip made on the engine's own I/O
thread. The driver decides nothing: every decision is the protocol's, shared
with sync calls.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Callable
from typing import Any

from cachu import _cachu
from cachu._offloop import off_loop, settle

_Step = _cachu.AsyncStep
# Bound once. The engine hands out these very objects, so a driver tells
# steps apart by identity.
_RUN, _LOCAL_LOCK, _NATIVE = _Step.Run, _Step.LocalLock, _Step.Native
_BLOCKING, _REFRESH = _Step.Blocking, _Step.Refresh
_running_loop = asyncio.get_running_loop
_log = logging.getLogger("cachu")

# loop -> {key being computed: a future done when the computing task
# finishes, made only once another task waits (None until then)}
_Table = dict[str, "asyncio.Future[None] | None"]
_inflight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Table]
_inflight = weakref.WeakKeyDictionary()
# The last loop's table, to skip the weak-dictionary lookup on the common path
# (one loop per thread; replacing the pair is atomic).
_last: tuple[Callable[[], object], _Table] = (lambda: None, {})
# Background refreshes in flight, held until they finish.
_refreshes: set[asyncio.Task[None]] = set()


def _table(loop: asyncio.AbstractEventLoop) -> _Table:
    global _last
    last_loop, table = _last
    if last_loop() is loop:
        return table
    table = _inflight.get(loop) or _inflight.setdefault(loop, {})
    _last = (weakref.ref(loop), table)
    return table


async def _wait_for_key(table: _Table, key: str, timeout: float) -> bool:
    """Become the task computing ``key`` on this loop once the task computing
    it now is done, waiting (suspended) at most ``timeout`` seconds. Returns
    whether this task holds it. (The uncontended case is taken by the driver
    inline, without a coroutine.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while key in table:
        busy = table[key]
        if busy is None:  # the first waiter: give the holder a future to finish
            busy = table[key] = loop.create_future()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        try:
            # shield: a waiter's cancellation must not cancel the holder's future.
            await asyncio.wait_for(asyncio.shield(busy), remaining)
        except asyncio.TimeoutError:
            return False
    table[key] = None
    return True


def _release(table: _Table, key: str) -> None:
    done = table.pop(key, None)
    if done is not None and not done.done():
        done.set_result(None)


async def _drive(
    call: _cachu.AsyncCall, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Perform the steps ``call`` asks for until it is over; return its outcome."""
    owned: _Table | None = None  # the per-loop table whose key lock this task holds
    key = ""
    try:
        step = call.step
        while True:
            if step is _RUN:
                try:
                    result = await fn(*args, **kwargs)
                except Exception as e:
                    step = call.failed(e)
                else:
                    step = call.ran(result)
            elif step is _LOCAL_LOCK:
                table = _table(_running_loop())
                key = call.key
                if key not in table:  # Uncontended: taken without suspending.
                    table[key] = None
                    owned = table
                    step = call.locked(False)
                elif await _wait_for_key(table, key, call.wait):
                    owned = table
                    step = call.locked(True)
                else:
                    step = call.busy()
            elif step is _NATIVE:
                await call.io()
                step = call.resume()
            elif step is _BLOCKING:
                step = await off_loop(call.perform)
            elif step is _REFRESH:
                _start_refresh(call, fn, args, kwargs)
                return call.outcome()
            else:
                return call.outcome()
    finally:
        call.close()
        if owned is not None:
            _release(owned, key)


def _start_refresh(
    call: _cachu.AsyncCall, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Refresh the stale value ``call`` served, as a task of this loop (it
    runs in a copy of the caller's context, as every task does)."""
    refresh = call.refresh_call()

    async def run() -> None:
        try:
            await _drive(refresh, fn, args, kwargs)
        except Exception as e:
            # Logged once per key until a refresh of it succeeds; never
            # raised into an unrelated caller.
            if refresh.finish_refresh(True):
                _log.warning(
                    "background refresh of %s failed; its stale value is served "
                    "until the window ends: %s",
                    refresh.name,
                    e,
                )
            return
        except BaseException:  # cancelled (its loop is closing): let go of the claim
            refresh.finish_refresh(False)
            raise
        refresh.finish_refresh(False)

    task = asyncio.get_running_loop().create_task(run())
    _refreshes.add(task)
    task.add_done_callback(_refreshes.discard)


def async_wrapper(fn: Callable[..., Any], core: _cachu.CachedFunction) -> Callable[..., Any]:
    """The ``async def`` that caches coroutine function ``fn`` through ``core``."""
    acall = core._acall

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        overwrite = False
        if kwargs and ("_skip_cache" in kwargs or "_overwrite_cache" in kwargs):
            skip = kwargs.pop("_skip_cache", False)
            overwrite = bool(kwargs.pop("_overwrite_cache", False))
            if skip:
                return await fn(*args, **kwargs)
        done, found = acall(args, kwargs or None, overwrite)
        if done:
            return found
        if found is None:  # caching is disabled
            return await fn(*args, **kwargs)
        return await _drive(found, fn, args, kwargs)

    async def get(*args: Any, **kwargs: Any) -> Any:
        return await settle(core._aget(*args, **kwargs))

    async def set(value: Any, **kwargs: Any) -> None:
        await settle(core._aset(value, **kwargs))

    async def invalidate(**kwargs: Any) -> None:
        await settle(core._ainvalidate(**kwargs))

    async def refresh(**kwargs: Any) -> Any:
        await invalidate(**kwargs)
        return await wrapper(**kwargs)

    async def original(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    wrapper._cachu = core  # type: ignore[attr-defined]
    wrapper.get = get  # type: ignore[attr-defined]
    wrapper.set = set  # type: ignore[attr-defined]
    wrapper.invalidate = invalidate  # type: ignore[attr-defined]
    wrapper.refresh = refresh  # type: ignore[attr-defined]
    wrapper.original = original  # type: ignore[attr-defined]
    return wrapper

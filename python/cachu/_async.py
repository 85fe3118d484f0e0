"""Caching of coroutine functions.

The wrapper stays a real ``async def`` (so ``inspect.iscoroutinefunction``
holds); the key building, lookups and stores are the same Rust calls the
sync path makes. Memory lookups run inline (they never wait) and file
lookups run in the loop's thread pool; concurrent tasks missing the same key
there wait on a per-loop, per-key future, so one computes and the others
read its result. Redis is natively async (``_on_redis``): the engine's I/O
thread does the round trips and the distributed lock is shared with every
other process, sync or async.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from collections.abc import Callable
from typing import Any

from cachu import _cachu
from cachu._offloop import off_loop
from cachu._offloop import run as _run

# loop -> {key being computed: a future done when the computing task
# finishes, made only once another task waits (None until then)}
_Table = dict[str, "asyncio.Future[None] | None"]
_inflight: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Table]
_inflight = weakref.WeakKeyDictionary()
# The last loop's table, to skip the weak-dictionary lookup on the common path
# (one loop per thread; replacing the pair is atomic).
_last: tuple[Callable[[], object], _Table] = (lambda: None, {})


def _table(loop: asyncio.AbstractEventLoop) -> _Table:
    global _last
    last_loop, table = _last
    if last_loop() is loop:
        return table
    table = _inflight.get(loop) or _inflight.setdefault(loop, {})
    _last = (weakref.ref(loop), table)
    return table


async def _acquire(
    loop: asyncio.AbstractEventLoop,
    table: _Table,
    key: str,
    timeout: float,
) -> tuple[bool, bool]:
    """Become the task computing ``key`` on this loop; wait (suspended, at
    most ``timeout`` seconds) while another task does. Returns (owner,
    waited): not the owner on timeout; `waited` if the task was suspended."""
    waited = False
    deadline = loop.time() + timeout
    while key in table:
        busy = table[key]
        if busy is None:  # the first waiter: give the holder a future to finish
            busy = table[key] = loop.create_future()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False, True
        waited = True
        try:
            # shield: a waiter's cancellation must not cancel the holder's future.
            await asyncio.wait_for(asyncio.shield(busy), remaining)
        except asyncio.TimeoutError:
            return False, True
    table[key] = None
    return True, waited


def _release(table: _Table, key: str) -> None:
    done = table.pop(key, None)
    if done is not None and not done.done():
        done.set_result(None)


async def _on_redis(
    core: _cachu.CachedFunction,
    fn: Callable[..., Any],
    key: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    overwrite: bool,
) -> Any:
    """A call on Redis, natively async: one round trip reads the value or
    takes the key's distributed lock; the owner computes, then stores and
    releases in a second round trip; others wait, suspended, for its value."""
    lock = None
    store = True
    if not overwrite:
        # Until the lock timeout: read or lock; if another caller holds the
        # lock, wait for its value; if it let go without storing, try again,
        # so that one caller computes, not all of them. A value `validate`
        # rejects is recomputed under the lock too, and its waiters wait for a
        # newer one (`stale` is the rejected value's created_at).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + core._lock_timeout()
        stale = None
        while True:
            if stale is None:
                state, payload = await core._aget_or_lock(key)
            else:
                state, payload = await core._atry_lock(key)
            if state == 2:
                # The lock was free; after a rejected read, another caller
                # may have stored a newer value before we took it: use that
                # rather than compute again.
                read = None if stale is None else await core._await_value(key, 0, stale)
                if read is None:
                    lock = payload
                    break
                payload.release()
            elif state == 3:  # Redis is down and the region fails open.
                store = False
                break
            elif state == 1:
                read = payload
            else:
                read = await core._await_value(key, max(0.0, deadline - loop.time()), stale)
            if read is not None:
                verdict, value = core._accept(key, *read)
                if verdict == 1:
                    return value
                if verdict == 0:
                    stale = read[1]
                else:  # It did not unpickle: remove it and read again.
                    await core._adelete_unreadable(key, *read)
                    stale = None
            if loop.time() >= deadline:
                break
    core._miss()
    try:
        result = await fn(*args, **kwargs)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    if store:
        await core._astore(key, result, lock)
    return result


def async_wrapper(fn: Callable[..., Any], core: _cachu.CachedFunction) -> Callable[..., Any]:
    """The ``async def`` that caches coroutine function ``fn`` through ``core``."""
    probe = core._probe

    async def peek(key: str, blocking: bool) -> tuple[bool, Any]:
        return await off_loop(core._peek, key) if blocking else core._peek(key)

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        overwrite = False
        if kwargs and ("_skip_cache" in kwargs or "_overwrite_cache" in kwargs):
            skip = kwargs.pop("_skip_cache", False)
            overwrite = bool(kwargs.pop("_overwrite_cache", False))
            if skip:
                return await fn(*args, **kwargs)
        key, state, value = probe(args, kwargs or None, not overwrite)
        if state == 1:
            return value
        if state == 4:  # caching is disabled
            return await fn(*args, **kwargs)
        assert key is not None
        if state == 3:
            return await _on_redis(core, fn, key, args, kwargs, overwrite)
        blocking = state == 2
        if blocking and not overwrite:
            found, value = await peek(key, True)
            if found:
                return value
        loop = asyncio.get_running_loop()
        table = _table(loop)
        if key in table:
            owner, waited = await _acquire(loop, table, key, core._lock_timeout())
        else:  # Uncontended: take it without suspending (or a future).
            table[key] = None
            owner, waited = True, False
        try:
            # Look again unless nothing can have changed: an in-memory probe
            # and an uncontended acquire never let another task run.
            if not overwrite and (waited or blocking):
                found, value = await peek(key, blocking)
                if found:
                    return value
            core._miss()
            result = await fn(*args, **kwargs)
            if blocking:
                await off_loop(core._store_result, key, result)
            else:
                core._store_result(key, result)
            return result
        finally:
            if owner:
                _release(table, key)

    backend_blocks = lambda: core._backend().blocking  # noqa: E731

    async def get(*args: Any, **kwargs: Any) -> Any:
        return await _run(backend_blocks(), core.get, *args, **kwargs)

    async def set(value: Any, **kwargs: Any) -> None:
        await _run(backend_blocks(), core.set, value, **kwargs)

    async def invalidate(**kwargs: Any) -> None:
        await _run(backend_blocks(), core.invalidate, **kwargs)

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

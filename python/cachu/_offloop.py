"""Running backend calls from coroutines without blocking the event loop."""

from __future__ import annotations

import asyncio
import atexit
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from cachu import _cachu

T = TypeVar("T")


async def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` in the loop's default thread pool (the Rust side releases
    the GIL while it waits on SQLite or the network)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))


async def settle(answer: tuple[bool, Any]) -> Any:
    """The result of an engine operation's awaitable face: ``(True,
    result)`` when it is done already, else ``(False, awaitable)``."""
    done, value = answer
    return value if done else await value


async def then_call(fut: asyncio.Future[Callable[[], tuple[bool, Any]]]) -> Any:
    """Await an engine round trip whose reply finishes on the loop's thread
    (decoding a value runs user code: not on the engine's thread), and what
    that may still await."""
    return await settle((await fut)())


def resolve_future(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    """Called on the loop's thread when an engine task finishes (through
    ``call_soon_threadsafe``); a future already cancelled is left alone."""
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


# Before the interpreter finalizes, stop the engine's I/O thread from calling
# back into Python (see src/python/aio.rs).
atexit.register(_cachu.shutdown_io)

"""Backend objects and the miss sentinel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from cachu import _cachu
from cachu._cachu import NO_VALUE
from cachu._offloop import settle


class Backend(_cachu.Backend):
    """A cache backend instance: ``get``/``set``/``delete``/``clear``/``keys``/
    ``count``/``close`` over mangled keys, and the same as awaitables under
    ``aget``, ``aset``, ... (Redis round trips are awaited natively; SQLite
    work that may wait runs in the loop's thread pool; the rest inline)."""

    async def aget(self, key: str) -> Any:
        return await settle(self._aget(key))

    async def aget_with_metadata(self, key: str) -> tuple[Any, float | None]:
        return await settle(self._aget_with_metadata(key))  # type: ignore[no-any-return]

    async def aset(self, key: str, value: Any, ttl: float) -> None:
        await settle(self._aset(key, value, ttl))

    async def adelete(self, key: str) -> None:
        await settle(self._adelete(key))

    async def aclear(self, pattern: str | None = None) -> int:
        return await settle(self._aclear(pattern))  # type: ignore[no-any-return]

    async def akeys(self, pattern: str | None = None) -> AsyncIterator[str]:
        for key in await settle(self._akeys(pattern)):
            yield key

    async def acount(self, pattern: str | None = None) -> int:
        return await settle(self._acount(pattern))  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        await settle(self._aclose())


class AsyncBackend:
    """The awaitable face of a :class:`Backend`: every method is a coroutine
    (also reachable as ``aget``, ``aset``, ...); ``keys`` is an async iterator."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @property
    def kind(self) -> str:
        return self.backend.kind

    async def get(self, key: str) -> Any:
        return await self.backend.aget(key)

    async def get_with_metadata(self, key: str) -> tuple[Any, float | None]:
        return await self.backend.aget_with_metadata(key)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        await self.backend.aset(key, value, ttl)

    async def delete(self, key: str) -> None:
        await self.backend.adelete(key)

    async def clear(self, pattern: str | None = None) -> int:
        return await self.backend.aclear(pattern)

    def keys(self, pattern: str | None = None) -> AsyncIterator[str]:
        return self.backend.akeys(pattern)

    async def count(self, pattern: str | None = None) -> int:
        return await self.backend.acount(pattern)

    async def close(self) -> None:
        await self.backend.aclose()

    aget = get
    aget_with_metadata = get_with_metadata
    aset = set
    adelete = delete
    aclear = clear
    akeys = keys
    acount = count
    aclose = close

    def __repr__(self) -> str:
        return f"<cachu.AsyncBackend {self.kind}>"


__all__ = ["NO_VALUE", "AsyncBackend", "Backend"]

"""Async CRUD run directly by asyncio.run still acts on the caller's package."""

import asyncio

import cachu


def test_async_clear_run_directly_by_asyncio_run_uses_callers_package():
    @cachu.cache(ttl=300)
    async def direct_run_clear(x: int) -> int:
        return x

    async def fill():
        await direct_run_clear(1)
        await direct_run_clear(2)

    asyncio.run(fill())
    assert asyncio.run(cachu.async_cache_clear(backend="memory", ttl=300)) == 2
    backend = asyncio.run(cachu.get_async_backend("memory", ttl=300))
    assert asyncio.run(backend.count()) == 0

"""Cold clear: cache_clear() reaches file and Redis regions that decorators
declared but no call has used yet in this process (entries written by
another process, or by an earlier run), and creates nothing where there is
nothing to clear."""

import asyncio
import logging
import os
import subprocess
import sys

import cachu
import pytest
from redis_server import free_port

PACKAGE = "coldpkg"
SOURCE = """
import asyncio
import os

import cachu

cachu.configure(
    backend=os.environ["COLD_KIND"],
    file_dir=os.environ["COLD_FILE_DIR"],
    redis_url=os.environ.get("COLD_REDIS_URL") or None,
    key_prefix="v1:",
)


@cachu.cache(ttl=300)
def f(x):
    return {"pid": os.getpid(), "x": x}


@cachu.cache(ttl=3600, tag="users")
def g(x):
    return {"pid": os.getpid(), "x": x}


@cachu.cache(ttl=300)
async def h(x):
    return {"pid": os.getpid(), "x": x}


def fill():
    f(1)
    f(2)
    g(1)
    asyncio.run(h(1))
"""


@pytest.fixture
def cold(request, tmp_path, monkeypatch, make_package):
    """``cold(kind, fill=True)``: another process fills the package's
    regions (unless ``fill`` is false); then the package is imported here
    (decorated, never called) and returned."""
    file_dir = tmp_path / "cache"
    file_dir.mkdir()

    def make(kind, fill=True):
        monkeypatch.setenv("COLD_KIND", kind)
        monkeypatch.setenv("COLD_FILE_DIR", str(file_dir))
        if kind == "redis":
            server = request.getfixturevalue("server")
            server.client().flushall()
            monkeypatch.setenv("COLD_REDIS_URL", server.url)
        root = tmp_path / "pkgs"
        root.mkdir(exist_ok=True)
        (root / PACKAGE).mkdir(exist_ok=True)
        (root / PACKAGE / "__init__.py").write_text(SOURCE)
        if fill:
            env = dict(os.environ, PYTHONPATH=str(root))
            subprocess.run(
                [sys.executable, "-c", f"import {PACKAGE}; {PACKAGE}.fill()"],
                env=env,
                check=True,
                timeout=60,
            )
        mod = make_package(PACKAGE, {"__init__.py": SOURCE})
        mod.file_dir = file_dir
        return mod

    return make


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_clear_before_any_call(cold, kind):
    mod = cold(kind)
    assert cachu.cache_clear(package=PACKAGE) == 4
    # Computed here, not read from the other process's entries.
    assert mod.f(1)["pid"] == os.getpid()
    assert mod.g(1)["pid"] == os.getpid()
    assert asyncio.run(mod.h(1))["pid"] == os.getpid()


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_tag_clear_before_any_call(cold, kind):
    mod = cold(kind)
    assert cachu.cache_clear(tag="users", package=PACKAGE) == 1
    assert mod.g(1)["pid"] == os.getpid()
    assert mod.f(1)["pid"] != os.getpid()  # untagged: kept


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_one_region_before_any_call(cold, kind):
    mod = cold(kind)
    assert cachu.cache_clear(backend=kind, ttl=3600, package=PACKAGE) == 1
    assert mod.f(2)["pid"] != os.getpid()


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_async_clear_before_any_call(cold, kind):
    mod = cold(kind)

    async def main():
        removed = await cachu.async_cache_clear(package=PACKAGE)
        return removed, await mod.h(1)

    removed, value = asyncio.run(main())
    assert removed == 4
    assert value["pid"] == os.getpid()


@pytest.mark.parametrize("kind", ["file", "redis"])
def test_function_clear_before_any_call(cold, kind):
    mod = cold(kind)
    assert mod.f.clear() == 2
    assert asyncio.run(mod.h.clear()) == 1
    assert mod.g(1)["pid"] != os.getpid()


def test_absent_database_stays_absent(cold):
    mod = cold("file", fill=False)
    assert cachu.cache_clear(package=PACKAGE) == 0
    assert cachu.cache_clear(backend="file", ttl=300, package=PACKAGE) == 0
    assert cachu.cache_clear(tag="users", package=PACKAGE) == 0
    assert mod.f.clear(x=1) == 0
    assert asyncio.run(mod.h.clear()) == 0
    assert os.listdir(mod.file_dir) == []


def test_memory_regions_not_made_are_left_alone(cold):
    mod = cold("memory", fill=False)
    assert cachu.cache_clear(package=PACKAGE) == 0
    assert mod.f.clear() == 0
    mod.f(1)
    assert cachu.cache_clear(package=PACKAGE) == 1


def test_redis_keys_of_other_prefixes_are_kept(cold, server):
    cold("redis")
    raw = server.client()
    raw.set("5m:other:f|x=1", b"not ours")
    raw.set("unrelated", b"x")
    assert cachu.cache_clear(package=PACKAGE) == 4
    assert sorted(raw.keys()) == [b"5m:other:f|x=1", b"unrelated"]


def test_unreachable_declared_redis_region_does_not_stop_a_clear(caplog):
    package = "cold_mixed"
    cachu.configure(
        package=package, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_socket_timeout=5
    )

    @cachu.cache(ttl=300, package=package)
    def in_memory(x):
        return x

    @cachu.cache(ttl=300, backend="redis", package=package)
    def in_redis(x):
        return x

    in_memory(1)
    try:
        with caplog.at_level(logging.WARNING, logger="cachu"):
            assert cachu.cache_clear(package=package) == 1
        assert "could not clear the redis region" in caplog.text
        # Named, it is what the caller asked for: its failure is raised.
        with pytest.raises(cachu.BackendUnavailableError):
            cachu.cache_clear(backend="redis", package=package)
    finally:
        from cachu.decorator import clear_backends

        clear_backends(package)

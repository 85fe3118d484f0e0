"""fn.clear(**partial) and cache_clear(global_clear=...), sync and async,
on memory, file and Redis."""

import asyncio

import backend_kinds
import cachu
import pytest

# The fixtures kind and use_backend, shared by the modules of these features.
kind = backend_kinds.kind
use_backend = backend_kinds.use_backend

PKG = "partialpkg"


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def is_async(request):
    return request.param


def decorate(is_async, **options):
    """A decorated ``fn(a, b=0)`` of PKG, and its clear as a plain call."""
    options.setdefault("ttl", 300)
    options.setdefault("package", PKG)
    if is_async:

        @cachu.cache(**options)
        async def fn(a, b=0):
            return [a, b]

        def call(*args, **kwargs):
            return asyncio.run(fn(*args, **kwargs))

        def clear(**partial):
            return asyncio.run(fn.clear(**partial))

    else:

        @cachu.cache(**options)
        def fn(a, b=0):
            return [a, b]

        call = fn
        clear = fn.clear
    return fn, call, clear


def live_keys(kind):
    return sorted(cachu.get_backend(kind, PKG, ttl=300).keys())


def test_partial_match(use_backend, kind, is_async):
    use_backend(PKG)
    _, call, clear = decorate(is_async)
    for a in (1, 2):
        for b in (1, 2, 3):
            call(a, b)
    assert clear(a=1) == 3
    assert live_keys(kind) == ["5m:fn|a=2 b=1", "5m:fn|a=2 b=2", "5m:fn|a=2 b=3"]
    assert clear(b=2) == 1
    assert clear(a=2, b=3) == 1
    assert live_keys(kind) == ["5m:fn|a=2 b=1"]
    assert clear(a=9) == 0
    assert clear() == 1
    assert live_keys(kind) == []


def test_whole_arguments_only(use_backend, kind, is_async):
    # `a=1` is neither `a=12`, nor the end of `xa=1`, nor inside a string.
    use_backend(PKG)
    _, call, clear = decorate(is_async)
    call(1)
    call(12)
    call("x a=1 y", 5)
    call(a="a=1")
    assert clear(a=1) == 1
    assert live_keys(kind) == ["5m:fn|a='a=1' b=0", "5m:fn|a='x a=1 y' b=5", "5m:fn|a=12 b=0"]


def test_glob_characters_are_literal(use_backend, kind, is_async):
    use_backend(PKG)
    _, call, clear = decorate(is_async)
    for value in ("a*", "abc", "a?", "ab", "[ab]", "a", "b"):
        call(value)
    assert clear(a="a*") == 1
    assert clear(a="a?") == 1
    assert clear(a="[ab]") == 1
    assert live_keys(kind) == [
        "5m:fn|a='a' b=0",
        "5m:fn|a='ab' b=0",
        "5m:fn|a='abc' b=0",
        "5m:fn|a='b' b=0",
    ]


def test_only_this_functions_entries(use_backend, kind, is_async):
    use_backend(PKG)
    _, call, clear = decorate(is_async)

    @cachu.cache(ttl=300, package=PKG)
    def other(a, b=0):
        return a

    @cachu.cache(ttl=300, package=PKG)
    def fn_more(a, b=0):  # a longer name starting with `fn`
        return a

    call(1)
    other(1)
    fn_more(1)
    assert clear(a=1) == 1
    assert clear() == 0
    assert live_keys(kind) == ["5m:fn_more|a=1 b=0", "5m:other|a=1 b=0"]


def test_tagged_function(use_backend, kind, is_async):
    use_backend(PKG)
    _, call, clear = decorate(is_async, tag="users")
    call(1)
    call(2)
    assert clear(a=2) == 1
    assert live_keys(kind) == ["5m:fn||users||a=1 b=0"]


def test_arguments_left_out_of_the_key(use_backend, kind):
    # Excluded, `_`-named and connection-like arguments are not in the key:
    # they narrow nothing, as an empty clear.
    use_backend(PKG)

    @cachu.cache(ttl=300, package=PKG, exclude={"log"})
    def fn(a, log=None, _trace=None):
        return a

    fn(1)
    fn(2)
    assert fn.clear(log="x") == 2
    fn(1)
    assert fn.clear(_trace=1, a=1) == 1


def test_key_prefix(use_backend, kind, is_async):
    # Only entries under the current key_prefix, unless _global=True.
    use_backend(PKG, key_prefix="v1:")
    _, call, clear = decorate(is_async)
    call(1)
    use_backend(PKG, key_prefix="v2:")
    call(1)
    call(2)
    assert clear(a=1) == 1
    assert live_keys(kind) == ["5m:v1:fn|a=1 b=0", "5m:v2:fn|a=2 b=0"]
    if is_async:
        fn = decorate(is_async)[0]
        assert asyncio.run(fn.clear(_global=True)) == 2
    else:
        assert decorate(is_async)[0].clear(_global=True) == 2
    assert live_keys(kind) == []


def test_a_method(use_backend, kind):
    use_backend(PKG)

    class Repo:
        @cachu.cache(ttl=300, package=PKG)
        def load(self, a):
            return a

    repo = Repo()
    repo.load(1)
    repo.load(2)
    assert repo.load.clear(a=1) == 1
    assert Repo.load.clear() == 1


@pytest.mark.parametrize("kind", ["redis"])
def test_global_clear_on_redis(use_backend, server):
    use_backend(PKG, key_prefix="v1:")
    _, call, _ = decorate(False)
    call(1)
    use_backend(PKG, key_prefix="v2:")
    call(1)
    raw = server.client()
    raw.set("5m:foreign", b"not cachu's shape")
    raw.set("lock:5m:v1:fn|a=9 b=0", b"a live caller's lock")
    assert cachu.cache_clear(package=PKG) == 1  # v2 only
    assert cachu.cache_clear(package=PKG, global_clear=True) == 1  # v1
    assert sorted(raw.keys()) == [b"5m:foreign", b"lock:5m:v1:fn|a=9 b=0"]


@pytest.mark.parametrize("kind", ["redis"])
def test_global_clear_with_tag_on_redis(use_backend):
    use_backend(PKG, key_prefix="v1:")
    _, call, _ = decorate(False, tag="users")
    _, call_plain, _ = decorate(False)
    call(1)
    call_plain(1)
    use_backend(PKG, key_prefix="v2:")
    call(1)
    removed = asyncio.run(cachu.async_cache_clear(tag="users", package=PKG, global_clear=True))
    assert removed == 2
    assert live_keys("redis") == ["5m:v1:fn|a=1 b=0"]


@pytest.mark.parametrize("backend", ["memory", "file"])
def test_memory_and_file_clear_ignores_prefix_as_0_2_7(backend, tmp_path):
    cachu.configure(package=PKG, backend=backend, file_dir=str(tmp_path), key_prefix="v1:")
    _, call, _ = decorate(False)
    call(1)
    cachu.configure(package=PKG, key_prefix="v2:")
    call(1)
    assert cachu.cache_clear(package=PKG) == 2
    call(1)
    assert cachu.cache_clear(package=PKG, global_clear=True) == 1

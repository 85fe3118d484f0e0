"""The async API: @cache / @async_cache on coroutine functions, their helper
methods, the async CRUD functions and AsyncBackend (memory, null and file).

Concurrency, cancellation, event loops and threads are in test_async_loops.py.
"""

import asyncio
import inspect
import time

import cachu
import pytest
from cachu.backends import NO_VALUE
from cachu.types import CacheEntry, CacheInfo

pytestmark = pytest.mark.asyncio

DECORATORS = [cachu.cache, cachu.async_cache]
DECORATOR_IDS = ["cache", "async_cache"]


@pytest.fixture(params=["memory", "file"])
def backend(request, tmp_path):
    """A backend that stores entries; also the package's default backend."""
    if request.param == "file":
        cachu.configure(backend="file", file_dir=str(tmp_path))
    return request.param


@pytest.fixture(params=["memory", "null", "file"])
def any_backend(request, tmp_path):
    """Every backend this build has; also the package's default backend."""
    cachu.configure(backend=request.param, file_dir=str(tmp_path))
    return request.param


def stored_keys(backend, ttl=300, package=None):
    """The keys of one region, as the sync backend object lists them."""
    if package is None:
        return sorted(cachu.get_backend(backend, ttl=ttl).keys())
    return sorted(cachu.get_backend(backend, package, ttl=ttl).keys())


def make_async(backend, name="fetch", decorator=cachu.cache, **opts):
    """An async cached function recording its calls, with a chosen __name__."""
    calls = []

    async def fn(user_id, kind="plain"):
        calls.append(user_id)
        await asyncio.sleep(0)
        return {"user": user_id, "kind": kind, "n": len(calls), "src": "async"}

    fn.__name__ = fn.__qualname__ = name
    opts.setdefault("ttl", 300)
    return decorator(backend=backend, **opts)(fn), calls


def make_sync(backend, name="fetch", **opts):
    """The sync twin of make_async: same name, same parameters."""
    calls = []

    def fn(user_id, kind="plain"):
        calls.append(user_id)
        return {"user": user_id, "kind": kind, "n": len(calls), "src": "sync"}

    fn.__name__ = fn.__qualname__ = name
    opts.setdefault("ttl", 300)
    return cachu.cache(backend=backend, **opts)(fn), calls


# --- shape of the decorated function -------------------------------------------


@pytest.mark.parametrize("decorator", DECORATORS, ids=DECORATOR_IDS)
async def test_decorated_coroutine_function_keeps_its_identity(decorator):
    async def get_profile(user_id):
        """Fetch a profile."""
        return {"id": user_id}

    cached = decorator(ttl=300)(get_profile)
    assert inspect.iscoroutinefunction(cached)
    assert cached.__name__ == "get_profile"
    assert cached.__doc__ == "Fetch a profile."
    assert cached.__wrapped__ is get_profile
    assert cached.__qualname__ == get_profile.__qualname__
    assert cached.__module__ == __name__
    call = cached(1)
    assert inspect.isawaitable(call)
    assert await call == {"id": 1}


async def test_instance_method(backend):
    calls = []

    class Repo:
        def __init__(self, name):
            self.name = name

        @cachu.cache(ttl=300)
        async def load(self, user_id):
            calls.append((self.name, user_id))
            return f"{self.name}:{user_id}"

    a, b = Repo("a"), Repo("b")
    assert inspect.iscoroutinefunction(Repo.load)
    assert await a.load(1) == "a:1"
    assert await a.load(1) == "a:1"
    # self is not part of the key: another instance hits the same entry.
    assert await b.load(1) == "a:1"
    assert await b.load(user_id=2) == "b:2"
    assert calls == [("a", 1), ("b", 2)]
    assert stored_keys(backend) == ["5m:load|user_id=1", "5m:load|user_id=2"]
    assert await Repo.load.get(user_id=1) == "a:1"


async def test_classmethod(backend):
    calls = []

    class Repo:
        prefix = "cls"

        @classmethod
        @cachu.cache(ttl=300)
        async def default(cls, user_id):
            calls.append(user_id)
            return f"{cls.prefix}:{user_id}"

    class Child(Repo):
        prefix = "child"

    assert inspect.iscoroutinefunction(Repo.default)
    assert await Repo.default(1) == "cls:1"
    assert await Repo.default(1) == "cls:1"
    assert await Child.default(1) == "cls:1"
    assert await Repo().default(2) == "cls:2"
    assert calls == [1, 2]
    assert stored_keys(backend) == ["5m:default|user_id=1", "5m:default|user_id=2"]


async def test_staticmethod(backend):
    calls = []

    class Repo:
        @staticmethod
        @cachu.async_cache(ttl=300)
        async def guest(level=0):
            calls.append(level)
            return {"id": 0, "level": level}

    assert inspect.iscoroutinefunction(Repo.guest)
    assert await Repo.guest() == {"id": 0, "level": 0}
    assert await Repo().guest() == {"id": 0, "level": 0}
    assert await Repo.guest(3) == {"id": 0, "level": 3}
    assert calls == [0, 3]
    assert stored_keys(backend) == ["5m:guest|level=0", "5m:guest|level=3"]


# --- decorator options -------------------------------------------------------------


async def test_int_and_callable_ttl_expire(backend):
    int_calls, fn_calls, seen = [], [], []

    @cachu.cache(ttl=1)
    async def brief(x):
        int_calls.append(x)
        return x

    def ttl_of(result):
        seen.append(result)
        return 1 if result["kind"] == "short" else 300

    @cachu.cache(ttl=ttl_of)
    async def dynamic(kind):
        fn_calls.append(kind)
        return {"kind": kind}

    await brief(1)
    await dynamic("short")
    await dynamic("long")
    await brief(1)
    await dynamic("short")
    await dynamic("long")
    assert int_calls == [1]
    assert fn_calls == ["short", "long"]
    assert seen == [{"kind": "short"}, {"kind": "long"}]
    # a callable ttl lives in region -1
    assert stored_keys(backend, ttl=-1) == ["-1s:dynamic|kind='long'", "-1s:dynamic|kind='short'"]
    assert stored_keys(backend, ttl=1) == ["1s:brief|x=1"]

    await asyncio.sleep(1.2)
    await brief(1)
    await dynamic("short")
    await dynamic("long")
    assert int_calls == [1, 1]
    assert fn_calls == ["short", "long", "short"]


async def test_backend_option_overrides_the_default(tmp_path):
    cachu.configure(file_dir=str(tmp_path))  # default backend stays memory

    @cachu.cache(ttl=300, backend="file")
    async def on_file(x):
        return x * 2

    @cachu.async_cache(ttl=300, backend="null")
    async def on_null(x):
        return x * 3

    assert await on_file(2) == 4
    assert await on_null(2) == 6
    assert stored_keys("file") == ["5m:on_file|x=2"]
    assert stored_keys("memory") == []
    assert (tmp_path / "test_async_cache5min.db").exists()


async def test_validate_gets_cache_entry_and_can_force_recompute(backend):
    entries = []
    version = {"current": 1}
    calls = []

    def check(entry):
        entries.append(entry)
        return entry.value["version"] == version["current"]

    @cachu.cache(ttl=300, validate=check)
    async def config(name):
        calls.append(name)
        return {"name": name, "version": version["current"]}

    before = time.time()
    assert await config("app") == {"name": "app", "version": 1}
    assert entries == []
    assert await config("app") == {"name": "app", "version": 1}
    assert calls == ["app"]
    assert len(entries) == 1
    entry = entries[0]
    assert isinstance(entry, CacheEntry)
    assert entry.value == {"name": "app", "version": 1}
    assert before - 1 <= entry.created_at <= time.time() + 1
    assert 0 <= entry.age < 5

    version["current"] = 2
    assert await config("app") == {"name": "app", "version": 2}  # rejected: recomputed
    assert calls == ["app", "app"]
    assert await config("app") == {"name": "app", "version": 2}  # stored over the old one
    assert calls == ["app", "app"]
    assert await config.get(name="app") == {"name": "app", "version": 2}


async def test_package_option_uses_that_packages_config_and_regions():
    cachu.configure(key_prefix="other:", package="otherpkg")

    @cachu.cache(ttl=300, package="otherpkg")
    async def shared(x):
        return x

    await shared(1)
    assert stored_keys("memory") == []
    assert stored_keys("memory", package="otherpkg") == ["5m:other:shared|x=1"]
    assert await cachu.async_cache_get(shared, x=1) == 1
    assert await cachu.async_cache_clear(backend="memory", ttl=300) == 0
    assert await cachu.async_cache_clear(backend="memory", ttl=300, package="otherpkg") == 1


# --- per-call control and disable() ----------------------------------------------


async def test_skip_cache_neither_reads_nor_writes(any_backend):
    seen = []

    @cachu.cache(ttl=300)
    async def fn(x, **extra):
        seen.append(extra)
        return len(seen)

    assert await fn(1, _skip_cache=True) == 1
    assert stored_keys(any_backend) == []
    assert await fn(1) == 2
    assert await fn(1, _skip_cache=True) == 3  # not read
    assert await fn(1) == (4 if any_backend == "null" else 2)
    assert all(extra == {} for extra in seen)


async def test_skip_cache_false_caches_normally(backend):
    seen = []

    @cachu.cache(ttl=300)
    async def fn(x, **extra):
        seen.append(extra)
        return len(seen)

    assert await fn(1, _skip_cache=False) == 1
    assert await fn(1, _skip_cache=False) == 1
    assert await fn(1, _overwrite_cache=False) == 1
    assert seen == [{}]
    assert stored_keys(backend) == ["5m:fn|x=1"]


async def test_overwrite_cache_runs_and_stores(backend):
    seen = []

    @cachu.cache(ttl=300)
    async def fn(x, **extra):
        seen.append(extra)
        return len(seen)

    assert await fn(1) == 1
    assert await fn(1, _overwrite_cache=True) == 2
    assert await fn(1) == 2
    assert await fn.get(x=1) == 2
    assert seen == [{}, {}]
    assert stored_keys(backend) == ["5m:fn|x=1"]


async def test_overwrite_cache_on_missing_key_stores(backend):
    @cachu.cache(ttl=300)
    async def fn(x):
        return x + 1

    assert await fn(1, _overwrite_cache=True) == 2
    assert await fn.get(x=1) == 2


async def test_disable_bypasses_cache(backend):
    fn, calls = make_async(backend)
    await fn(1)
    cachu.disable()
    assert cachu.is_disabled()
    await fn(1)
    await fn(2)
    await fn(2)
    assert calls == [1, 1, 2, 2]
    assert stored_keys(backend) == ["5m:fetch|kind='plain' user_id=1"]
    cachu.enable()
    await fn(1)
    await fn(2)
    assert calls == [1, 1, 2, 2, 2]


# --- helper methods ----------------------------------------------------------------


async def test_helpers_are_awaitable(backend):
    fn, _ = make_async(backend)
    for name in ("get", "set", "invalidate", "refresh", "original"):
        assert callable(getattr(fn, name)), name
    aw = fn.get(default=None, user_id=1)
    assert inspect.isawaitable(aw)
    assert await aw is None


async def test_helper_get(backend):
    fn, calls = make_async(backend)
    with pytest.raises(KeyError):
        await fn.get(user_id=1)
    assert await fn.get(default=None, user_id=1) is None
    assert await fn.get(default="fallback", user_id=1) == "fallback"
    value = await fn(1)
    assert await fn.get(user_id=1) == value
    assert await fn.get(user_id=1, kind="plain") == value
    with pytest.raises(KeyError):
        await fn.get(user_id=1, kind="other")
    assert calls == [1]


async def test_helper_get_returns_stored_none_not_default(backend):
    @cachu.cache(ttl=300)
    async def nothing(x):
        return None

    await nothing(1)
    assert await nothing.get(default="missing", x=1) is None


async def test_helper_set_then_call_is_a_hit(backend):
    fn, calls = make_async(backend)
    assert await fn.set({"stored": True}, user_id=5) is None
    assert await fn(5) == {"stored": True}
    assert await fn(user_id=5, kind="plain") == {"stored": True}
    await fn.set({"stored": "again"}, user_id=5)
    assert await fn(5) == {"stored": "again"}
    assert calls == []
    assert stored_keys(backend) == ["5m:fetch|kind='plain' user_id=5"]


async def test_helper_invalidate(backend):
    fn, calls = make_async(backend)
    await fn(1)
    await fn(2)
    assert await fn.invalidate(user_id=1) is None
    assert await fn.get(default=None, user_id=1) is None
    await fn.invalidate(user_id=99)  # missing: harmless
    await fn(1)
    await fn(2)
    assert calls == [1, 2, 1]


async def test_helper_refresh(backend):
    fn, calls = make_async(backend)
    first = await fn(1)
    refreshed = await fn.refresh(user_id=1)
    assert refreshed["n"] == first["n"] + 1
    assert await fn(1) == refreshed
    assert await fn.refresh(user_id=3) == {"user": 3, "kind": "plain", "n": 3, "src": "async"}
    assert calls == [1, 1, 3]


async def test_helper_original(backend):
    seen = []

    @cachu.cache(ttl=300)
    async def fn(a, b=2, *rest, **extra):
        seen.append((a, b, rest, extra))
        return len(seen)

    assert await fn.original(1) == 1
    assert await fn.original(1) == 2
    assert await fn.original(1, 3, 4, z=5) == 3
    assert seen[-1] == (1, 3, (4,), {"z": 5})
    assert stored_keys(backend) == []
    await fn(1)
    assert await fn.original(1) == 5
    assert await fn(1) == 4


async def test_helpers_on_null_backend(tmp_path):
    fn, calls = make_async("null")
    await fn.set("v", user_id=1)
    assert await fn.get(default="none", user_id=1) == "none"
    with pytest.raises(KeyError):
        await fn.get(user_id=1)
    await fn.invalidate(user_id=1)
    assert (await fn.refresh(user_id=1))["user"] == 1
    assert (await fn.original(2))["user"] == 2
    assert calls == [1, 2]


async def test_helpers_with_callable_ttl(backend):
    @cachu.cache(ttl=lambda result: 300)
    async def dyn(x):
        return x

    await dyn.set("v", x=1)
    assert await dyn(1) == "v"
    assert stored_keys(backend, ttl=-1) == ["-1s:dyn|x=1"]
    assert await dyn.refresh(x=1) == 1


# --- async CRUD functions -------------------------------------------------------------


async def test_async_cache_get_set_delete(backend):
    fn, calls = make_async(backend)
    with pytest.raises(KeyError):
        await cachu.async_cache_get(fn, user_id=1)
    assert await cachu.async_cache_get(fn, user_id=1, default=None) is None
    value = await fn(1)
    assert await cachu.async_cache_get(fn, user_id=1) == value
    assert await cachu.async_cache_set(fn, {"set": 1}, user_id=1) is None
    assert await fn(1) == {"set": 1}
    assert await fn.get(user_id=1) == {"set": 1}
    assert await cachu.async_cache_delete(fn, user_id=1) is None
    assert await cachu.async_cache_get(fn, user_id=1, default="gone") == "gone"
    await cachu.async_cache_delete(fn, user_id=1)  # missing: harmless
    assert calls == [1]


async def test_async_crud_on_null_backend():
    fn, calls = make_async("null")
    await cachu.async_cache_set(fn, "x", user_id=1)
    assert await cachu.async_cache_get(fn, user_id=1, default="missing") == "missing"
    await cachu.async_cache_delete(fn, user_id=1)
    await fn(1)
    await fn(1)
    assert calls == [1, 1]
    info = await cachu.async_cache_info(fn)
    assert (info.hits, info.misses, info.currsize) == (0, 2, 0)


async def test_async_cache_info_counts(backend):
    fn, _ = make_async(backend)
    other, _ = make_async(backend, name="other")
    info = await cachu.async_cache_info(fn)
    assert isinstance(info, CacheInfo)
    assert (info.hits, info.misses, info.currsize) == (0, 0, 0)
    await fn(1)
    await fn(1)
    await fn(1)
    await fn(2)
    await other(1)
    info = await cachu.async_cache_info(fn)
    assert (info.hits, info.misses, info.currsize) == (2, 2, 2)
    info = await cachu.async_cache_info(other)
    assert (info.hits, info.misses, info.currsize) == (0, 1, 1)
    sync_info = cachu.cache_info(fn)
    assert (sync_info.hits, sync_info.misses, sync_info.currsize) == (2, 2, 2)


async def test_skip_cache_is_not_counted_as_a_hit(backend):
    fn, _ = make_async(backend)
    await fn(1)
    await fn(1, _skip_cache=True)
    assert (await cachu.async_cache_info(fn)).hits == 0


async def test_async_cache_clear_returns_counts_and_resets_counters(backend):
    fn, _ = make_async(backend)
    other, _ = make_async(backend, name="other", ttl=60)
    await fn(1)
    await fn(1)
    await fn(2)
    await other(1)
    await other(1)
    assert (await cachu.async_cache_info(fn)).hits == 1

    # an unrelated region: nothing removed, counters reset anyway
    assert await cachu.async_cache_clear(backend=backend, ttl=7) == 0
    info = await cachu.async_cache_info(fn)
    assert (info.hits, info.misses, info.currsize) == (0, 0, 2)

    await fn(1)
    assert await cachu.async_cache_clear(backend=backend, ttl=300) == 2
    info = await cachu.async_cache_info(fn)
    assert (info.hits, info.misses, info.currsize) == (0, 0, 0)
    assert stored_keys(backend, ttl=60) == ["1m:other|kind='plain' user_id=1"]

    await fn(3)
    assert await cachu.async_cache_clear(backend=backend) == 2
    assert stored_keys(backend, ttl=60) == []
    await fn(3)
    await other(4)
    assert await cachu.async_cache_clear() == 2
    assert stored_keys(backend) == []


async def test_async_cache_clear_by_tag_across_backends(tmp_path):
    cachu.configure(file_dir=str(tmp_path))

    @cachu.cache(ttl=300, tag="t", backend="memory")
    async def mem_tagged(x):
        return x

    @cachu.cache(ttl=300, tag="t", backend="file")
    async def file_tagged(x):
        return x

    @cachu.cache(ttl=300, backend="file")
    async def file_plain(x):
        return x

    for x in (1, 2):
        await mem_tagged(x)
        await file_tagged(x)
        await file_plain(x)
    assert await cachu.async_cache_clear(tag="t") == 4
    assert stored_keys("memory") == []
    assert stored_keys("file") == ["5m:file_plain|x=1", "5m:file_plain|x=2"]


def plain_coroutine_function(user_id):
    return user_id


@pytest.mark.parametrize(
    "call",
    [
        lambda f: cachu.async_cache_get(f, user_id=1),
        lambda f: cachu.async_cache_set(f, 1, user_id=1),
        lambda f: cachu.async_cache_delete(f, user_id=1),
        lambda f: cachu.async_cache_info(f),
    ],
    ids=["get", "set", "delete", "info"],
)
async def test_async_crud_on_undecorated_raises_value_error(call):
    async def undecorated(user_id):
        return user_id

    with pytest.raises(ValueError):
        await call(undecorated)
    with pytest.raises(ValueError):
        await call(plain_coroutine_function)


async def test_helper_and_crud_get_take_default_positionally(backend):
    fn, _ = make_async(backend)
    assert await fn.get("fallback", user_id=1) == "fallback"
    assert await cachu.async_cache_get(fn, "fallback", user_id=1) == "fallback"
    await fn(1)
    assert (await fn.get("fallback", user_id=1))["user"] == 1


async def test_unknown_backend_raises_value_error():
    with pytest.raises(ValueError):
        await cachu.async_cache_clear(backend="bogus")
    with pytest.raises(ValueError):
        await cachu.get_async_backend("bogus", ttl=300)
    with pytest.raises(ValueError):
        cachu.async_cache(ttl=300, backend="bogus")


# --- keys identical to the sync decorator's ----------------------------------------------


def sync_shape(**opts):
    @cachu.cache(ttl=300, **opts)
    def shape(a, b=2, *rest, c=3, _hidden=None, **extra):
        return [a, b, list(rest), c, extra]

    return shape


def async_shape(**opts):
    @cachu.cache(ttl=300, **opts)
    async def shape(a, b=2, *rest, c=3, _hidden=None, **extra):
        return [a, b, list(rest), c, extra]

    return shape


class FakeConnection:
    """Looks like a database connection: never part of a key."""

    dialect = "fake"


SHAPE_CALLS = [
    ((1,), {}),
    ((1, 5), {}),
    ((1,), {"b": 5}),
    ((), {"a": 1, "b": 5}),
    ((1, 5, 6, 7), {}),
    ((1,), {"c": 9}),
    ((1,), {"zed": "x", "alpha": [1, 2]}),
    ((1,), {"_hidden": "secret"}),
    (("text",), {}),
    ((None, 1.5), {}),
    (((1, "two"),), {}),
    (({"k": [1, 2]},), {}),
    ((FakeConnection(),), {}),
    ((1, FakeConnection()), {"conn": FakeConnection()}),
]


@pytest.mark.filterwarnings("ignore::cachu.CacheKeyCollisionWarning")  # same name on purpose
@pytest.mark.parametrize(
    "opts",
    [{}, {"tag": "users"}, {"tag": "user|admin"}, {"exclude": {"b", "zed"}}],
    ids=["plain", "tag", "pipe-tag", "exclude"],
)
@pytest.mark.parametrize("prefix", ["", "v2:"], ids=["no-prefix", "prefix"])
async def test_keys_match_the_sync_decorator(backend, opts, prefix):
    cachu.configure(key_prefix=prefix)
    sync_fn, async_fn = sync_shape(**opts), async_shape(**opts)
    for args, kwargs in SHAPE_CALLS:
        sync_fn(*args, **kwargs)
    sync_keys = stored_keys(backend)
    assert await cachu.async_cache_clear(backend=backend, ttl=300) == len(sync_keys)
    for args, kwargs in SHAPE_CALLS:
        await async_fn(*args, **kwargs)
    assert stored_keys(backend) == sync_keys
    assert len(sync_keys) > 5
    assert all(k.startswith(f"5m:{prefix}shape|") for k in sync_keys)


@pytest.mark.filterwarnings(
    "ignore::cachu.CacheKeyCollisionWarning"
)  # tested in test_collisions.py
async def test_keys_are_the_documented_strings(backend):
    fn = async_shape()
    await fn(1)
    await fn(1, 5, 6, 7)
    await fn(1, c=9, zed="x")
    await fn(FakeConnection(), _hidden=1)
    assert stored_keys(backend) == [
        "5m:shape|a=1 b=2",
        "5m:shape|a=1 b=2 c=9 zed='x'",
        "5m:shape|a=1 b=5 vararg1=6 vararg2=7",
        "5m:shape|b=2",
    ]


# --- sync and async share entries ------------------------------------------------------


async def test_sync_value_is_a_hit_for_async(backend):
    sync_fn, sync_calls = make_sync(backend, name="twin")
    async_fn, async_calls = make_async(backend, name="twin")
    stored = sync_fn(1)
    assert stored["src"] == "sync"
    assert await async_fn(1) == stored
    assert await async_fn(user_id=1, kind="plain") == stored
    assert await async_fn.get(user_id=1) == stored
    assert await cachu.async_cache_get(async_fn, user_id=1) == stored
    assert async_calls == []
    assert sync_calls == [1]
    assert (await cachu.async_cache_info(async_fn)).hits == 2


async def test_async_value_is_a_hit_for_sync(backend):
    sync_fn, sync_calls = make_sync(backend, name="twin", tag="grp")
    async_fn, async_calls = make_async(backend, name="twin", tag="grp")
    stored = await async_fn(1, "special")
    assert stored["src"] == "async"
    assert sync_fn(1, "special") == stored
    assert sync_fn.get(user_id=1, kind="special") == stored
    assert cachu.cache_get(sync_fn, user_id=1, kind="special") == stored
    assert sync_calls == []
    assert async_calls == [1]


async def test_crud_functions_cross_sync_and_async(backend):
    sync_fn, sync_calls = make_sync(backend, name="twin")
    async_fn, async_calls = make_async(backend, name="twin")

    cachu.cache_set(sync_fn, "from-sync", user_id=1)
    assert await cachu.async_cache_get(async_fn, user_id=1) == "from-sync"
    assert await async_fn(1) == "from-sync"

    await cachu.async_cache_set(async_fn, "from-async", user_id=2)
    assert cachu.cache_get(sync_fn, user_id=2) == "from-async"
    assert sync_fn(2) == "from-async"

    await cachu.async_cache_delete(async_fn, user_id=1)
    assert cachu.cache_get(sync_fn, user_id=1, default=None) is None
    cachu.cache_delete(sync_fn, user_id=2)
    assert await cachu.async_cache_get(async_fn, user_id=2, default=None) is None
    assert sync_calls == [] and async_calls == []


async def test_sync_backend_sees_async_backend_writes(backend):
    ab = await cachu.get_async_backend(backend, ttl=300)
    b = cachu.get_backend(backend, ttl=300)
    await ab.set("k", [1, 2], 300)
    assert b.get("k") == [1, 2]
    b.set("j", "sync", 300)
    assert await ab.get("j") == "sync"


# --- AsyncBackend ---------------------------------------------------------------------------


async def test_get_async_backend_returns_async_backend(any_backend):
    ab = await cachu.get_async_backend(any_backend, ttl=300)
    assert isinstance(ab, cachu.AsyncBackend)
    default = await cachu.get_async_backend(ttl=300)
    assert isinstance(default, cachu.AsyncBackend)
    for name in (
        "get",
        "get_with_metadata",
        "set",
        "delete",
        "clear",
        "count",
        "close",
        "aget",
        "aget_with_metadata",
        "aset",
        "adelete",
        "aclear",
        "acount",
        "aclose",
    ):
        assert inspect.iscoroutinefunction(getattr(ab, name)), name


async def test_async_backend_get_set_delete(backend):
    ab = await cachu.get_async_backend(backend, ttl=300)
    assert await ab.get("missing") is NO_VALUE
    assert await ab.set("k", {"a": [1, 2]}, 300) is None
    assert await ab.get("k") == {"a": [1, 2]}
    await ab.set("k", "replaced", 300)
    assert await ab.get("k") == "replaced"
    await ab.set("none", None, 300)
    assert await ab.get("none") is None
    assert await ab.delete("k") is None
    assert await ab.get("k") is NO_VALUE
    await ab.delete("k")  # missing: harmless


async def test_async_backend_get_with_metadata(backend):
    ab = await cachu.get_async_backend(backend, ttl=300)
    assert await ab.get_with_metadata("missing") == (NO_VALUE, None)
    value, created = await ab.get_with_metadata("missing")
    assert value is NO_VALUE and created is None
    before = time.time()
    await ab.set("k", "v", 300)
    value, created = await ab.get_with_metadata("k")
    assert value == "v"
    assert isinstance(created, float)
    assert before - 1 <= created <= time.time() + 1


async def test_async_backend_entries_expire(backend):
    ab = await cachu.get_async_backend(backend, ttl=300)
    await ab.set("soon", 1, 1)
    await ab.set("later", 2, 300)
    assert await ab.get("soon") == 1
    await asyncio.sleep(1.2)
    assert await ab.get("soon") is NO_VALUE
    assert await ab.get("later") == 2


async def test_async_backend_keys_count_clear(backend):
    ab = await cachu.get_async_backend(backend, ttl=300)
    for key in ("abc", "abd", "aXc", "b", "user|1", "user|22"):
        await ab.set(key, key, 300)
    it = ab.keys()
    assert hasattr(it, "__aiter__") and hasattr(it, "__anext__")
    assert sorted([k async for k in it]) == ["aXc", "abc", "abd", "b", "user|1", "user|22"]
    assert sorted([k async for k in ab.keys("ab?")]) == ["abc", "abd"]
    assert sorted([k async for k in ab.keys(pattern="user|*")]) == ["user|1", "user|22"]
    assert [k async for k in ab.keys("nothing*")] == []
    assert await ab.count() == 6
    assert await ab.count("a?c") == 2
    assert await ab.clear("user|*") == 2
    assert await ab.count() == 4
    assert await ab.clear() == 4
    assert await ab.count() == 0
    assert [k async for k in ab.keys()] == []


async def test_async_backend_aliases(backend):
    ab = await cachu.get_async_backend(backend, ttl=300)
    await ab.aset("k", "v", 300)
    assert await ab.aget("k") == "v"
    value, created = await ab.aget_with_metadata("k")
    assert value == "v" and created is not None
    assert [k async for k in ab.akeys()] == ["k"]
    assert await ab.acount() == 1
    await ab.adelete("k")
    assert await ab.aget("k") is NO_VALUE
    await ab.aset("x1", 1, 300)
    await ab.aset("x2", 2, 300)
    assert await ab.aclear("x*") == 2
    assert await ab.acount() == 0
    await ab.aclose()


async def test_async_backend_close(backend):
    ab = await cachu.get_async_backend(backend, ttl=300)
    await ab.set("k", "v", 300)
    assert await ab.close() is None


async def test_null_async_backend_stores_nothing():
    ab = await cachu.get_async_backend("null", ttl=300)
    await ab.set("k", "v", 300)
    assert await ab.get("k") is NO_VALUE
    assert await ab.get_with_metadata("k") == (NO_VALUE, None)
    assert [k async for k in ab.keys()] == []
    assert await ab.count() == 0
    assert await ab.clear() == 0
    await ab.delete("k")
    await ab.close()


async def test_sync_backend_async_aliases(any_backend):
    b = cachu.get_backend(any_backend, ttl=300)
    assert isinstance(b, cachu.Backend)
    await b.aset("k", [1], 300)
    await b.aset("j", [2], 300)
    stores = any_backend != "null"
    assert await b.aget("k") == ([1] if stores else NO_VALUE)
    assert await b.aget("missing") is NO_VALUE
    value, created = await b.aget_with_metadata("k")
    assert (value == [1]) if stores else (value is NO_VALUE and created is None)
    assert sorted([k async for k in b.akeys()]) == (["j", "k"] if stores else [])
    assert [k async for k in b.akeys("j*")] == (["j"] if stores else [])
    assert await b.acount() == (2 if stores else 0)
    assert await b.acount("k") == (1 if stores else 0)
    await b.adelete("k")
    assert await b.aget("k") is NO_VALUE
    assert await b.aclear() == (1 if stores else 0)
    await b.aclose()


async def test_async_backend_shares_decorated_entries(backend):
    fn, _ = make_async(backend)
    value = await fn(1)
    ab = await cachu.get_async_backend(backend, ttl=300)
    key = "5m:fetch|kind='plain' user_id=1"
    assert [k async for k in ab.keys()] == [key]
    assert await ab.get(key) == value
    await ab.set(key, "planted", 300)
    assert await fn(1) == "planted"


async def test_clear_async_backends(tmp_path):
    cachu.configure(file_dir=str(tmp_path))
    mem_fn, mem_calls = make_async("memory", name="mem")
    file_fn, file_calls = make_async("file", name="disk")
    await mem_fn(1)
    await file_fn(1)
    before = cachu.get_backend("memory", ttl=300)

    assert await cachu.clear_async_backends() is None
    # a fresh memory instance, empty; the file entries are still on disk
    assert cachu.get_backend("memory", ttl=300) is not before
    assert stored_keys("memory") == []
    assert stored_keys("file") == ["5m:disk|kind='plain' user_id=1"]
    await mem_fn(1)
    await file_fn(1)
    assert mem_calls == [1, 1]
    assert file_calls == [1]


async def test_clear_async_backends_for_one_package():
    fn, _ = make_async("memory")
    await fn(1)
    cachu.get_backend("memory", "otherpkg", ttl=300).set("k", "v", 300)
    await cachu.clear_async_backends("otherpkg")
    assert cachu.get_backend("memory", "otherpkg", ttl=300).get("k") is NO_VALUE
    assert stored_keys("memory") == ["5m:fetch|kind='plain' user_id=1"]


# --- exceptions ---------------------------------------------------------------------------------


class Boom(Exception):
    pass


async def test_exception_propagates_and_nothing_is_stored(any_backend):
    calls = []

    @cachu.cache(ttl=300)
    async def fails(x):
        calls.append(x)
        await asyncio.sleep(0)
        raise Boom(x)

    with pytest.raises(Boom):
        await fails(1)
    with pytest.raises(Boom):
        await fails(1)
    assert calls == [1, 1]
    assert stored_keys(any_backend) == []
    assert await fails.get(default="none", x=1) == "none"


async def test_exception_in_refresh_and_overwrite_keeps_old_value(backend):
    state = {"fail": False}

    @cachu.cache(ttl=300)
    async def flaky(x):
        if state["fail"]:
            raise Boom(x)
        return "good"

    assert await flaky(1) == "good"
    state["fail"] = True
    with pytest.raises(Boom):
        await flaky(1, _overwrite_cache=True)
    assert await flaky.get(x=1) == "good"
    with pytest.raises(Boom):
        await flaky.refresh(x=1)
    with pytest.raises(Boom):
        await flaky(1)
    assert stored_keys(backend) == []


@pytest.mark.parametrize("where", ["cache_if", "ttl", "validate"])
async def test_callback_exceptions_propagate_and_nothing_is_stored(backend, where):
    def explode(_):
        raise Boom(where)

    opts = {"ttl": 300}
    if where == "cache_if":
        opts["cache_if"] = explode
    elif where == "ttl":
        opts["ttl"] = explode
    else:
        opts["validate"] = explode
    region = -1 if where == "ttl" else 300

    @cachu.cache(**opts)
    async def guarded(x):
        return x

    if where == "validate":
        # validate only runs on a hit: plant one
        await guarded.set("planted", x=1)
        with pytest.raises(Boom):
            await guarded(1)
        assert stored_keys(backend, ttl=region) == ["5m:guarded|x=1"]
        assert await guarded.get(x=1) == "planted"
    else:
        with pytest.raises(Boom):
            await guarded(1)
        assert stored_keys(backend, ttl=region) == []


async def test_unpicklable_result_raises(backend):
    @cachu.cache(ttl=300)
    async def makes_lambda(x):
        return lambda: x

    with pytest.raises(Exception):  # noqa: B017 - pickle's error type varies
        await makes_lambda(1)
    assert stored_keys(backend) == []

"""The CRUD functions (``cache_get`` ``cache_set`` ``cache_delete``
``cache_info``, and their ``async_`` twins), the same on every backend and
both faces: ``face.crud('cache_get', ...)`` is the sync function for the sync
face and the awaited ``async_`` one for the async face."""

import behaviour
import pytest
from cachu.types import CacheInfo

face = behaviour.face
store = behaviour.store


def make_counter(face, name="crud_fn", **options):
    state = {"n": 0}
    options.setdefault("ttl", 300)

    def fn(user_id, scope="all"):
        state["n"] += 1
        return {"id": user_id, "scope": scope, "n": state["n"]}

    fn.__name__ = fn.__qualname__ = name
    decorated = face.decorate(fn, **options)
    decorated.state = state
    return decorated


def info(face, fn):
    got = face.crud("cache_info", fn)
    assert isinstance(got, CacheInfo)
    return (got.hits, got.misses, got.currsize)


def test_cache_get_after_call(face, store):
    fn = make_counter(face)
    face.wait(fn(1))
    if not store.keeps:
        assert face.crud("cache_get", fn, user_id=1, default="none") == "none"
        return
    assert face.crud("cache_get", fn, user_id=1) == {"id": 1, "scope": "all", "n": 1}
    assert face.crud("cache_get", fn, user_id=1, scope="all") == {"id": 1, "scope": "all", "n": 1}
    assert fn.state["n"] == 1


def test_cache_get_missing_raises_key_error_or_gives_the_default(face, store):
    fn = make_counter(face)
    with pytest.raises(KeyError):
        face.crud("cache_get", fn, user_id=1)
    assert face.crud("cache_get", fn, user_id=1, default=None) is None
    assert face.crud("cache_get", fn, default=0, user_id=1) == 0
    assert fn.state["n"] == 0


def test_cache_set_then_call_hits(face, store):
    fn = make_counter(face, tag="users")
    face.crud("cache_set", fn, {"id": 123, "name": "Updated"}, user_id=123)
    key = "5m:crud_fn||users||scope='all' user_id=123"
    if not store.keeps:
        assert face.wait(fn(123))["n"] == 1
        assert store.keys() == []
        return
    assert face.wait(fn(123)) == {"id": 123, "name": "Updated"}
    assert fn.state["n"] == 0
    assert face.crud("cache_get", fn, user_id=123) == {"id": 123, "name": "Updated"}
    assert store.keys() == [key]
    assert store.value(key) == {"id": 123, "name": "Updated"}
    store.lives(key, 300)


def test_cache_set_is_seen_by_the_helpers_and_back(face, store):
    fn = make_counter(face)
    face.crud("cache_set", fn, "v", user_id=2, scope="x")
    face.wait(fn.set("w", user_id=3))
    if store.keeps:
        assert face.wait(fn.get(user_id=2, scope="x")) == "v"
        assert face.crud("cache_get", fn, user_id=3) == "w"
    else:
        assert face.wait(fn.get(default="none", user_id=2, scope="x")) == "none"
        assert face.crud("cache_get", fn, user_id=3, default="none") == "none"


def test_cache_delete(face, store):
    fn = make_counter(face)
    face.wait(fn(1))
    face.wait(fn(2))
    face.crud("cache_delete", fn, user_id=1)
    assert face.crud("cache_get", fn, user_id=1, default=None) is None
    if store.keeps:
        assert face.crud("cache_get", fn, user_id=2)["n"] == 2
        assert store.keys() == ["5m:crud_fn|scope='all' user_id=2"]
    assert face.wait(fn(1))["n"] == 3
    # Missing: harmless.
    face.crud("cache_delete", fn, user_id=9)
    face.crud("cache_delete", fn, user_id=9)
    assert face.wait(fn(9))["n"] == 4


def test_crud_with_a_key_prefix(face, store):
    store.configure(key_prefix="v9:")
    fn = make_counter(face)
    face.wait(fn(1))
    if store.keeps:
        assert face.crud("cache_get", fn, user_id=1)["n"] == 1
        assert store.keys() == ["5m:v9:crud_fn|scope='all' user_id=1"]
    face.crud("cache_delete", fn, user_id=1)
    assert face.crud("cache_get", fn, user_id=1, default="gone") == "gone"
    assert store.keys() == []


def test_cache_info_counts(face, store):
    fn = make_counter(face)
    assert info(face, fn) == (0, 0, 0)
    for x in (1, 1, 1, 2):
        face.wait(fn(x))
    assert info(face, fn) == ((2, 2, 2) if store.keeps else (0, 4, 0))


def test_cache_info_per_function(face, store):
    f = make_counter(face, "stat_fn")
    g = make_counter(face, "stat_fn_more")
    for x in (1, 1):
        face.wait(f(x))
    for x in (1, 2, 3):
        face.wait(g(x))
    if store.keeps:
        assert (info(face, f), info(face, g)) == ((1, 1, 1), (0, 3, 3))
    else:
        assert (info(face, f), info(face, g)) == ((0, 2, 0), (0, 3, 0))


def test_currsize_tracks_live_keys(face, store):
    fn = make_counter(face, "sized_fn", tag="t")
    for i in range(5):
        face.wait(fn(i))
    assert info(face, fn)[2] == (5 if store.keeps else 0)
    face.crud("cache_delete", fn, user_id=0)
    face.wait(fn.invalidate(user_id=1))
    assert info(face, fn)[2] == (3 if store.keeps else 0)
    face.crud("cache_set", fn, "x", user_id=99)
    assert info(face, fn)[2] == (4 if store.keeps else 0)


def test_currsize_counts_only_the_functions_own_keys(face, store):
    store.configure(key_prefix="pre:")
    f = make_counter(face, "own_a")
    g = make_counter(face, "own_b")
    face.wait(f(1))
    face.wait(g(1))
    face.wait(g(2))
    b = face.backend(store.name, 300)
    face.wait(b.set("unrelated", 1, 300))
    face.wait(b.set("5m:pre:own_a_not|x=1", 1, 300))
    if store.keeps:
        assert (info(face, f)[2], info(face, g)[2]) == (1, 2)
    else:
        assert (info(face, f)[2], info(face, g)[2]) == (0, 0)


def test_cache_info_with_a_callable_ttl(face, store):
    fn = make_counter(face, "dyn_info", ttl=lambda r: 300)
    face.wait(fn(1))
    face.wait(fn(1))
    assert info(face, fn) == ((1, 1, 1) if store.keeps else (0, 2, 0))


def test_a_clear_resets_the_counters_even_of_another_region(face, store):
    fn = make_counter(face, "reset_stats")
    face.wait(fn(1))
    face.wait(fn(1))
    assert info(face, fn)[0] == (1 if store.keeps else 0)
    face.crud("cache_clear", backend=store.name, ttl=7)
    assert info(face, fn) == ((0, 0, 1) if store.keeps else (0, 0, 0))
    face.wait(fn(1))
    face.crud("cache_clear", backend=store.name, ttl=300)
    assert info(face, fn) == (0, 0, 0)


def test_skip_cache_is_not_a_hit(face, store):
    fn = make_counter(face, "skip_stats")
    face.wait(fn(1))
    face.wait(fn(1, _skip_cache=True))
    assert info(face, fn)[0] == 0


def plain_function(user_id):
    return user_id


async def plain_coroutine_function(user_id):
    return user_id


@pytest.mark.parametrize("name", ["cache_get", "cache_set", "cache_delete", "cache_info"])
@pytest.mark.parametrize("fn", [plain_function, plain_coroutine_function])
def test_crud_on_an_undecorated_function_raises_value_error(face, name, fn):
    args = {"cache_set": (fn, 1), "cache_info": (fn,)}.get(name, (fn,))
    kwargs = {} if name == "cache_info" else {"user_id": 1}
    with pytest.raises(ValueError):
        face.crud(name, *args, **kwargs)
    if name == "cache_get":
        with pytest.raises(ValueError):
            face.crud(name, fn, default=None, user_id=1)

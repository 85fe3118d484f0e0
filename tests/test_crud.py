"""cache_get / cache_set / cache_delete / cache_info."""

import cachu
import pytest
from cachu import cache_clear, cache_delete, cache_get, cache_info, cache_set
from cachu.types import CacheInfo


def make_counter(name="crud_fn", **options):
    state = {"n": 0}
    options.setdefault("ttl", 300)

    def fn(user_id, scope="all"):
        state["n"] += 1
        return {"id": user_id, "scope": scope, "n": state["n"]}

    fn.__name__ = fn.__qualname__ = name
    decorated = cachu.cache(**options)(fn)
    decorated.state = state
    return decorated


def test_cache_get_after_call():
    fn = make_counter()
    fn(1)
    assert cache_get(fn, user_id=1) == {"id": 1, "scope": "all", "n": 1}
    assert cache_get(fn, user_id=1, scope="all") == {"id": 1, "scope": "all", "n": 1}
    assert fn.state["n"] == 1


def test_cache_get_missing_raises_key_error():
    fn = make_counter()
    with pytest.raises(KeyError):
        cache_get(fn, user_id=1)
    assert fn.state["n"] == 0


def test_cache_get_default():
    fn = make_counter()
    assert cache_get(fn, user_id=1, default=None) is None
    assert cache_get(fn, default=0, user_id=1) == 0


def test_cache_set_then_call_hits(region_keys):
    fn = make_counter(tag="users")
    cache_set(fn, {"id": 123, "name": "Updated"}, user_id=123)
    assert fn(123) == {"id": 123, "name": "Updated"}
    assert fn.state["n"] == 0
    assert cache_get(fn, user_id=123) == {"id": 123, "name": "Updated"}
    assert region_keys(300) == ["5m:crud_fn||users||scope='all' user_id=123"]


def test_cache_set_visible_to_helper_get():
    fn = make_counter()
    cache_set(fn, "v", user_id=2, scope="x")
    assert fn.get(user_id=2, scope="x") == "v"
    fn.set("w", user_id=3)
    assert cache_get(fn, user_id=3) == "w"


def test_cache_delete():
    fn = make_counter()
    fn(1)
    fn(2)
    cache_delete(fn, user_id=1)
    assert cache_get(fn, user_id=1, default=None) is None
    assert cache_get(fn, user_id=2)["n"] == 2
    assert fn(1)["n"] == 3


def test_cache_delete_missing_is_harmless():
    fn = make_counter()
    cache_delete(fn, user_id=1)
    assert fn(1)["n"] == 1


def test_crud_with_key_prefix():
    cachu.configure(key_prefix="v9:")
    fn = make_counter()
    fn(1)
    assert cache_get(fn, user_id=1)["n"] == 1
    cache_delete(fn, user_id=1)
    assert cache_get(fn, user_id=1, default="gone") == "gone"


def test_crud_on_null_backend():
    fn = make_counter(backend="null")
    cache_set(fn, "x", user_id=1)
    assert cache_get(fn, user_id=1, default="missing") == "missing"
    cache_delete(fn, user_id=1)
    assert fn(1)["n"] == 1
    assert fn(1)["n"] == 2


# --- cache_info -----------------------------------------------------------------


def test_cache_info_counts():
    fn = make_counter()
    info = cache_info(fn)
    assert isinstance(info, CacheInfo)
    assert (info.hits, info.misses, info.currsize) == (0, 0, 0)

    fn(1)
    fn(1)
    fn(1)
    fn(2)
    info = cache_info(fn)
    assert (info.hits, info.misses, info.currsize) == (2, 2, 2)


def test_cache_info_per_function():
    f = make_counter("stat_fn")
    g = make_counter("stat_fn_more")
    f(1)
    f(1)
    g(1)
    g(2)
    g(3)
    assert (cache_info(f).hits, cache_info(f).misses, cache_info(f).currsize) == (1, 1, 1)
    assert (cache_info(g).hits, cache_info(g).misses, cache_info(g).currsize) == (0, 3, 3)


def test_currsize_tracks_live_keys():
    fn = make_counter("sized_fn", tag="t")
    for i in range(5):
        fn(i)
    assert cache_info(fn).currsize == 5
    cache_delete(fn, user_id=0)
    fn.invalidate(user_id=1)
    assert cache_info(fn).currsize == 3
    cache_set(fn, "x", user_id=99)
    assert cache_info(fn).currsize == 4


def test_currsize_with_key_prefix():
    cachu.configure(key_prefix="pre:")
    fn = make_counter("prefixed_info")
    fn(1)
    fn(2)
    assert cache_info(fn).currsize == 2


def test_currsize_only_counts_own_keys():
    f = make_counter("own_a")
    g = make_counter("own_b")
    f(1)
    g(1)
    g(2)
    cachu.get_backend("memory", ttl=300).set("unrelated", 1, 300)
    assert cache_info(f).currsize == 1
    assert cache_info(g).currsize == 2


def test_cache_info_callable_ttl():
    fn = make_counter("dyn_info", ttl=lambda r: 300)
    fn(1)
    fn(1)
    info = cache_info(fn)
    assert (info.hits, info.misses, info.currsize) == (1, 1, 1)


def test_cache_info_null_backend():
    fn = make_counter("null_info", backend="null")
    fn(1)
    fn(1)
    assert cache_info(fn).currsize == 0


def test_cache_clear_resets_counters():
    fn = make_counter("reset_stats")
    fn(1)
    fn(1)
    assert cache_info(fn).hits == 1
    cache_clear(backend="memory", ttl=300)
    info = cache_info(fn)
    assert (info.hits, info.misses, info.currsize) == (0, 0, 0)


def test_unrelated_cache_clear_also_resets_counters():
    fn = make_counter("reset_stats_too")
    fn(1)
    fn(1)
    cache_clear(backend="memory", ttl=7)
    info = cache_info(fn)
    assert (info.hits, info.misses, info.currsize) == (0, 0, 1)


def test_skip_cache_is_not_a_hit():
    fn = make_counter("skip_stats")
    fn(1)
    fn(1, _skip_cache=True)
    assert cache_info(fn).hits == 0


# --- undecorated functions --------------------------------------------------------


def plain_function(user_id):
    return user_id


@pytest.mark.parametrize(
    "call",
    [
        lambda: cache_get(plain_function, user_id=1),
        lambda: cache_get(plain_function, user_id=1, default=None),
        lambda: cache_set(plain_function, 1, user_id=1),
        lambda: cache_delete(plain_function, user_id=1),
        lambda: cache_info(plain_function),
    ],
    ids=["get", "get-default", "set", "delete", "info"],
)
def test_crud_on_undecorated_raises_value_error(call):
    with pytest.raises(ValueError):
        call()

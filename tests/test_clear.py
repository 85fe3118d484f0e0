"""cache_clear: every row of the clearing table, return counts and package scope."""

import cachu
import pytest
from cachu import cache_clear


def populate():
    """Fill several regions of this package's memory backend.

    ttl 300: users (2 keys), products (1 key), untagged (1 key)
    ttl 60:  users (1 key), untagged (1 key)
    callable ttl (region -1): users (1 key)
    Returns the decorated functions by name.
    """

    @cachu.cache(ttl=300, tag="users")
    def users_300(i):
        return i

    @cachu.cache(ttl=300, tag="products")
    def products_300(i):
        return i

    @cachu.cache(ttl=300)
    def plain_300(i):
        return i

    @cachu.cache(ttl=60, tag="users")
    def users_60(i):
        return i

    @cachu.cache(ttl=60)
    def plain_60(i):
        return i

    @cachu.cache(ttl=lambda r: 300, tag="users")
    def users_dyn(i):
        return i

    users_300(1)
    users_300(2)
    products_300(1)
    plain_300(1)
    users_60(1)
    plain_60(1)
    users_dyn(1)
    return {
        "users_300": users_300,
        "products_300": products_300,
        "plain_300": plain_300,
        "users_60": users_60,
        "plain_60": plain_60,
        "users_dyn": users_dyn,
    }


def snapshot(region_keys):
    return {ttl: region_keys(ttl) for ttl in (300, 60, -1)}


def test_populated_layout(region_keys):
    populate()
    assert snapshot(region_keys) == {
        300: [
            "5m:plain_300|i=1",
            "5m:products_300||products||i=1",
            "5m:users_300||users||i=1",
            "5m:users_300||users||i=2",
        ],
        60: ["1m:plain_60|i=1", "1m:users_60||users||i=1"],
        -1: ["-1s:users_dyn||users||i=1"],
    }


def test_row_ttl_backend(region_keys):
    """ttl=300, tag=None, backend='memory': all keys of the 300 s memory region."""
    populate()
    assert cache_clear(backend="memory", ttl=300) == 4
    assert snapshot(region_keys) == {
        300: [],
        60: ["1m:plain_60|i=1", "1m:users_60||users||i=1"],
        -1: ["-1s:users_dyn||users||i=1"],
    }


def test_row_ttl_tag_backend(region_keys):
    """ttl=300, tag='users', backend='memory': only users in the 300 s region."""
    populate()
    assert cache_clear(tag="users", backend="memory", ttl=300) == 2
    assert snapshot(region_keys) == {
        300: ["5m:plain_300|i=1", "5m:products_300||products||i=1"],
        60: ["1m:plain_60|i=1", "1m:users_60||users||i=1"],
        -1: ["-1s:users_dyn||users||i=1"],
    }


def test_row_backend_only(region_keys):
    """ttl=None, tag=None, backend='memory': every memory region."""
    populate()
    assert cache_clear(backend="memory") == 7
    assert snapshot(region_keys) == {300: [], 60: [], -1: []}


def test_row_tag_only(region_keys):
    """ttl=None, tag='users', backend=None: users across all backends and regions."""
    populate()
    assert cache_clear(tag="users") == 4
    assert snapshot(region_keys) == {
        300: ["5m:plain_300|i=1", "5m:products_300||products||i=1"],
        60: ["1m:plain_60|i=1"],
        -1: [],
    }


def test_tag_and_backend_without_ttl(region_keys):
    populate()
    assert cache_clear(tag="users", backend="memory") == 4
    assert region_keys(300) == ["5m:plain_300|i=1", "5m:products_300||products||i=1"]
    assert region_keys(60) == ["1m:plain_60|i=1"]


def test_clear_everything(region_keys):
    populate()
    assert cache_clear() == 7
    assert snapshot(region_keys) == {300: [], 60: [], -1: []}
    assert cache_clear() == 0


def test_clear_null_backend_returns_zero(region_keys):
    populate()
    assert cache_clear(backend="null") == 0
    assert cache_clear(backend="null", ttl=300) == 0
    assert len(region_keys(300)) == 4


def test_clear_empty_region_returns_zero():
    assert cache_clear(backend="memory", ttl=300) == 0
    assert cache_clear(tag="nothing", backend="memory", ttl=300) == 0
    assert cache_clear(backend="memory") == 0
    assert cache_clear() == 0


def test_cleared_entries_are_recomputed():
    calls = []

    @cachu.cache(ttl=300, tag="users")
    def recompute_after_clear(i):
        calls.append(i)
        return i

    recompute_after_clear(1)
    recompute_after_clear(1)
    cache_clear(tag="users", backend="memory", ttl=300)
    recompute_after_clear(1)
    assert calls == [1, 1]


@pytest.mark.parametrize("spelling", ["user|admin", "|user|admin|", "|user.admin|", "user.admin"])
def test_tag_clear_normalises_tag(region_keys, spelling):
    @cachu.cache(ttl=300, tag="user|admin")
    def admins(i):
        return i

    @cachu.cache(ttl=300, tag="user")
    def plain_users(i):
        return i

    admins(1)
    plain_users(1)
    assert cache_clear(tag=spelling, backend="memory", ttl=300) == 1
    assert region_keys(300) == ["5m:plain_users||user||i=1"]


def test_tag_clear_matches_whole_tag(region_keys):
    @cachu.cache(ttl=300, tag="users")
    def tag_users(i):
        return i

    @cachu.cache(ttl=300, tag="users2")
    def tag_users2(i):
        return i

    @cachu.cache(ttl=300, tag="old_users")
    def tag_old_users(i):
        return i

    tag_users(1)
    tag_users2(1)
    tag_old_users(1)
    assert cache_clear(tag="users") == 1
    assert region_keys(300) == [
        "5m:tag_old_users||old_users||i=1",
        "5m:tag_users2||users2||i=1",
    ]


def test_tag_clear_with_key_prefix(region_keys):
    cachu.configure(key_prefix="v1:")

    @cachu.cache(ttl=300, tag="users")
    def prefixed_users(i):
        return i

    @cachu.cache(ttl=300)
    def prefixed_plain(i):
        return i

    prefixed_users(1)
    prefixed_plain(1)
    assert cache_clear(tag="users", backend="memory", ttl=300) == 1
    assert region_keys(300) == ["5m:v1:prefixed_plain|i=1"]


def test_clear_is_scoped_to_caller_package(region_keys):
    @cachu.cache(ttl=300, package="elsewhere")
    def foreign(i):
        return i

    @cachu.cache(ttl=300)
    def local(i):
        return i

    foreign(1)
    local(1)
    assert cache_clear(backend="memory", ttl=300) == 1
    assert region_keys(300, package="elsewhere") == ["5m:foreign|i=1"]
    assert cache_clear(backend="memory") == 0
    assert cache_clear() == 0
    assert region_keys(300, package="elsewhere") == ["5m:foreign|i=1"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "memory", "ttl": 300},
        {"backend": "memory"},
        {},
        {"tag": "users"},
        {"tag": "users", "backend": "memory", "ttl": 300},
    ],
    ids=["ttl-backend", "backend", "all", "tag", "tag-ttl-backend"],
)
def test_clear_with_package_argument(region_keys, kwargs):
    @cachu.cache(ttl=300, tag="users", package="elsewhere")
    def foreign_users(i):
        return i

    @cachu.cache(ttl=300, tag="users")
    def local_users(i):
        return i

    foreign_users(1)
    foreign_users(2)
    local_users(1)
    assert cache_clear(package="elsewhere", **kwargs) == 2
    assert region_keys(300, package="elsewhere") == []
    assert region_keys(300) == ["5m:local_users||users||i=1"]


def test_clear_resets_hits_and_misses():
    @cachu.cache(ttl=300)
    def counted_clear(i):
        return i

    counted_clear(1)
    counted_clear(1)
    cache_clear(tag="nonexistent")
    info = cachu.cache_info(counted_clear)
    assert (info.hits, info.misses) == (0, 0)


def test_callable_ttl_names_the_dynamic_region(region_keys):
    """A ttl callable names the region of result-dependent ttls (-1), as it
    does for get_backend: only that region is cleared."""
    populate()
    assert cache_clear(backend="memory", ttl=lambda r: 60) == 1
    after = snapshot(region_keys)
    assert after[-1] == []
    assert len(after[300]) == 4 and len(after[60]) == 2


@pytest.mark.parametrize("bad", ["300", [300], True])
def test_ttl_that_is_not_a_number_is_refused(region_keys, bad):
    populate()
    with pytest.raises(TypeError, match="ttl must be a number of seconds"):
        cache_clear(backend="memory", ttl=bad)
    with pytest.raises(TypeError, match="ttl must be a number of seconds"):
        cache_clear(ttl=bad)
    assert sum(len(keys) for keys in snapshot(region_keys).values()) == 7


def test_nan_ttl_is_refused():
    with pytest.raises(ValueError, match="nan"):
        cache_clear(backend="memory", ttl=float("nan"))

"""``cache_clear`` (and ``async_cache_clear``): every row of API.md's
clearing table, what it returns, tags, key prefixes and package scope, the
same on every backend and both faces. A (backend, ttl) clear removes that
TTL region only (COMPAT.md), also on Redis where every region shares one
database; a clear naming a backend never touches another backend."""

import math

import behaviour
import cachu
import pytest

face = behaviour.face
store = behaviour.store


class Entry:
    def __init__(self, backend, region, tag, key):
        self.backend, self.region, self.tag, self.key = backend, region, tag, key


def other_backend(store):
    """A second backend with entries of its own (memory, or file beside memory)."""
    return "file" if store.name == "memory" else "memory"


def populate(face, store):
    """Fill several regions: on the store's backend, ttl 300: users (2
    keys), products, untagged; ttl 60: users, untagged; a callable ttl
    (region -1): users; on the other backend, ttl 300: users. Returns the
    entries that exist now."""
    other = other_backend(store)
    made = [
        ("users_300", {"ttl": 300, "tag": "users"}, 2),
        ("products_300", {"ttl": 300, "tag": "products"}, 1),
        ("plain_300", {"ttl": 300}, 1),
        ("users_60", {"ttl": 60, "tag": "users"}, 1),
        ("plain_60", {"ttl": 60}, 1),
        ("users_dyn", {"ttl": lambda r: 300, "tag": "users"}, 1),
        ("other_users", {"ttl": 300, "tag": "users", "backend": other}, 1),
    ]
    entries = []
    for name, options, n in made:

        def work(i):
            return i

        work.__name__ = work.__qualname__ = name
        fn = face.decorate(work, **options)
        for i in range(1, n + 1):
            face.wait(fn(i))
        backend = options.get("backend", store.name)
        if backend == "null":
            continue
        ttl = options["ttl"]
        region = -1 if callable(ttl) else ttl
        tag = options.get("tag", "")
        head = f"{cachu._cachu.region_name(region)}:{name}"
        for i in range(1, n + 1):
            key = f"{head}||{tag}||i={i}" if tag else f"{head}|i={i}"
            entries.append(Entry(backend, region, tag, key))
    return entries


def snapshot(store):
    """What the store's regions and the other backend's region hold."""
    other = other_backend(store)
    out = {(store.name, ttl): store.keys(ttl) for ttl in (300, 60, -1)}
    out[(other, 300)] = sorted(cachu.get_backend(other, behaviour.PACKAGE, ttl=300).keys())
    return out


def expected(store, entries):
    out = {key: [] for key in snapshot_keys(store)}
    for e in entries:
        out[(e.backend, e.region)].append(e.key)
    return {k: sorted(v) for k, v in out.items()}


def snapshot_keys(store):
    return [(store.name, 300), (store.name, 60), (store.name, -1), (other_backend(store), 300)]


def test_populated_layout(face, store):
    populate(face, store)
    layout = snapshot(store)
    if store.keeps:
        assert layout[(store.name, 300)] == [
            "5m:plain_300|i=1",
            "5m:products_300||products||i=1",
            "5m:users_300||users||i=1",
            "5m:users_300||users||i=2",
        ]
        assert layout[(store.name, 60)] == ["1m:plain_60|i=1", "1m:users_60||users||i=1"]
        assert layout[(store.name, -1)] == ["-1s:users_dyn||users||i=1"]
    assert layout[(other_backend(store), 300)] == ["5m:other_users||users||i=1"]


# Each row: the clear's arguments (BACKEND: the store's backend, OTHER: the
# other one), and which entries it removes.
BACKEND, OTHER = object(), object()
ROWS = {
    "ttl+backend": {"ttl": 300, "backend": BACKEND},
    "ttl+tag+backend": {"ttl": 300, "tag": "users", "backend": BACKEND},
    "backend": {"backend": BACKEND},
    "tag": {"tag": "users"},
    "tag+backend": {"tag": "users", "backend": BACKEND},
    "everything": {},
    "callable ttl names region -1": {"ttl": lambda r: 60, "backend": BACKEND},
    "the other backend": {"backend": OTHER},
    "null": {"backend": "null"},
    "null region": {"backend": "null", "ttl": 300},
}


def removes(kwargs, entry):
    ttl = kwargs.get("ttl")
    region = None if ttl is None else -1 if callable(ttl) else ttl
    return (
        kwargs.get("backend") in (None, entry.backend)
        and region in (None, entry.region)
        and kwargs.get("tag") in (None, entry.tag)
    )


@pytest.mark.parametrize("row", list(ROWS))
def test_clearing_table(face, store, row):
    entries = populate(face, store)
    names = {BACKEND: store.name, OTHER: other_backend(store)}
    kwargs = {k: names.get(v, v) if k == "backend" else v for k, v in ROWS[row].items()}
    gone = [e for e in entries if removes(kwargs, e)]
    left = [e for e in entries if not removes(kwargs, e)]
    if store.raw is not None:  # a key of another program in the same database
        store.raw.set("unrelated", b"x")
    assert face.crud("cache_clear", **kwargs) == len(gone)
    assert snapshot(store) == expected(store, left)
    store.no_locks()
    if store.raw is not None:
        assert store.raw.get("unrelated") == b"x"


def test_clearing_twice_and_empty_regions_return_zero(face, store):
    assert face.crud("cache_clear", backend=store.name, ttl=300) == 0
    assert face.crud("cache_clear", tag="nothing", backend=store.name, ttl=300) == 0
    assert face.crud("cache_clear", backend=store.name) == 0
    assert face.crud("cache_clear") == 0
    entries = populate(face, store)
    assert face.crud("cache_clear") == len(entries)
    assert face.crud("cache_clear") == 0


def test_cleared_entries_are_recomputed_and_counters_reset(face, store):
    calls = []

    def recompute_after_clear(i):
        calls.append(i)
        return i

    fn = face.decorate(recompute_after_clear, ttl=300, tag="users")
    face.wait(fn(1))
    face.wait(fn(1))
    removed = face.crud("cache_clear", tag="users", backend=store.name, ttl=300)
    assert removed == (1 if store.keeps else 0)
    info = face.crud("cache_info", fn)
    assert (info.hits, info.misses, info.currsize) == (0, 0, 0)
    face.wait(fn(1))
    assert calls == ([1, 1] if store.keeps else [1, 1, 1])
    info = face.crud("cache_info", fn)
    assert (info.hits, info.misses) == (0, 1)
    # Any clear resets every counter, even one that removes nothing.
    face.wait(fn(1))
    face.crud("cache_clear", tag="nonexistent")
    info = face.crud("cache_info", fn)
    assert (info.hits, info.misses) == (0, 0)


@pytest.mark.parametrize("spelling", ["user|admin", "|user|admin|", "|user.admin|", "user.admin"])
def test_a_tag_clear_normalises_the_tag(face, store, spelling):
    def admins(i):
        return i

    def plain_users(i):
        return i

    face.wait(face.decorate(admins, ttl=300, tag="user|admin")(1))
    face.wait(face.decorate(plain_users, ttl=300, tag="user")(1))
    removed = face.crud("cache_clear", tag=spelling, backend=store.name, ttl=300)
    assert removed == (1 if store.keeps else 0)
    assert store.keys() == (["5m:plain_users||user||i=1"] if store.keeps else [])


def test_a_tag_clear_matches_the_whole_tag(face, store):
    for name, tag in [("tag_users", "users"), ("tag_users2", "users2"), ("old", "old_users")]:

        def work(i):
            return i

        work.__name__ = work.__qualname__ = name
        face.wait(face.decorate(work, ttl=300, tag=tag)(1))
    assert face.crud("cache_clear", tag="users") == (1 if store.keeps else 0)
    expected = ["5m:old||old_users||i=1", "5m:tag_users2||users2||i=1"]
    assert store.keys() == (expected if store.keeps else [])


def test_a_tag_clear_with_a_key_prefix(face, store):
    store.configure(key_prefix="v1:")

    def prefixed_users(i):
        return i

    def prefixed_plain(i):
        return i

    face.wait(face.decorate(prefixed_users, ttl=300, tag="users")(1))
    face.wait(face.decorate(prefixed_plain, ttl=300)(1))
    removed = face.crud("cache_clear", tag="users", backend=store.name, ttl=300)
    assert removed == (1 if store.keeps else 0)
    assert store.keys() == (["5m:v1:prefixed_plain|i=1"] if store.keeps else [])


@pytest.fixture
def two_packages(face, store):
    """This package (key_prefix ``mine:``) and ``elsewhere`` (``else:``) on
    the same backend (on Redis, a package's entries are the ones under its
    key_prefix); each with one 'users' function, ``elsewhere``'s with two
    entries. Returns a function listing a package's keys."""
    store.configure(key_prefix="mine:")
    store.configure(package="elsewhere", key_prefix="else:")

    def foreign_users(i):
        return i

    def local_users(i):
        return i

    foreign = face.decorate(foreign_users, ttl=300, tag="users", package="elsewhere")
    local = face.decorate(local_users, ttl=300, tag="users")
    face.wait(foreign(1))
    face.wait(foreign(2))
    face.wait(local(1))

    def keys(package):
        prefix = "5m:else:" if package == "elsewhere" else "5m:mine:"
        return [k for k in store.keys(300, package=package) if k.startswith(prefix)]

    return keys


def test_a_clear_is_scoped_to_the_callers_package(face, store, two_packages):
    theirs = ["5m:else:foreign_users||users||i=1", "5m:else:foreign_users||users||i=2"]
    if not store.keeps:
        assert face.crud("cache_clear") == 0
        return
    assert face.crud("cache_clear", backend=store.name, ttl=300) == 1
    assert two_packages("elsewhere") == theirs
    assert face.crud("cache_clear", backend=store.name) == 0
    assert face.crud("cache_clear") == 0
    assert two_packages("elsewhere") == theirs


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": 300, "backend": BACKEND},
        {"backend": BACKEND},
        {},
        {"tag": "users"},
        {"tag": "users", "backend": BACKEND, "ttl": 300},
    ],
    ids=["ttl-backend", "backend", "all", "tag", "tag-ttl-backend"],
)
def test_a_clear_with_the_package_argument(face, store, two_packages, kwargs):
    kwargs = {k: store.name if v is BACKEND else v for k, v in kwargs.items()}
    removed = face.crud("cache_clear", package="elsewhere", **kwargs)
    assert removed == (2 if store.keeps else 0)
    assert two_packages("elsewhere") == []
    ours = ["5m:mine:local_users||users||i=1"] if store.keeps else []
    assert two_packages(behaviour.PACKAGE) == ours


@pytest.mark.parametrize("bad", ["300", [300], True])
def test_a_ttl_that_is_not_a_number_is_refused(face, store, bad):
    entries = populate(face, store)
    for kwargs in ({"backend": store.name, "ttl": bad}, {"ttl": bad}):
        with pytest.raises(TypeError, match="ttl must be a number of seconds"):
            face.crud("cache_clear", **kwargs)
    assert snapshot(store) == expected(store, entries)


def test_a_nan_ttl_is_refused(face, store):
    with pytest.raises(ValueError, match="nan"):
        face.crud("cache_clear", backend=store.name, ttl=math.nan)

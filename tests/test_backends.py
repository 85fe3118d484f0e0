"""Backend objects from get_backend(): memory and null."""

import sys
import time

import cachu
import pytest
from cachu.backends import NO_VALUE


@pytest.fixture
def mem():
    return cachu.get_backend("memory", ttl=300)


@pytest.fixture
def null():
    return cachu.get_backend("null", ttl=300)


class Box:
    """A picklable user class (module level, so pickle can find it)."""

    def __init__(self, items):
        self.items = items

    def __eq__(self, other):
        return isinstance(other, Box) and other.items == self.items


class Vanishing:
    def __init__(self, v):
        self.v = v


# --- shape ----------------------------------------------------------------------


def test_backends_are_backend_instances(mem, null):
    assert isinstance(mem, cachu.Backend)
    assert isinstance(null, cachu.Backend)
    assert isinstance(mem, cachu.backends.Backend)


def test_same_region_shares_entries():
    a = cachu.get_backend("memory", ttl=300)
    b = cachu.get_backend("memory", ttl=300)
    a.set("shared", 1, 300)
    assert b.get("shared") == 1


def test_regions_and_packages_are_separate():
    r300 = cachu.get_backend("memory", ttl=300)
    r60 = cachu.get_backend("memory", ttl=60)
    other = cachu.get_backend("memory", "some_other_pkg", ttl=300)
    r300.set("k", "v", 300)
    assert r60.get("k") is NO_VALUE
    assert other.get("k") is NO_VALUE
    assert list(r60.keys()) == []


def test_default_backend_follows_config():
    cachu.configure(backend="null")
    inst = cachu.get_backend(ttl=300)
    inst.set("k", "v", 300)
    assert inst.get("k") is NO_VALUE
    cachu.configure(backend="memory")
    inst = cachu.get_backend(ttl=300)
    inst.set("k", "v", 300)
    assert inst.get("k") == "v"


def test_backend_shares_storage_with_decorator():
    @cachu.cache(ttl=300)
    def via_decorator(x):
        return x * 3

    via_decorator(2)
    mem = cachu.get_backend("memory", ttl=300)
    assert mem.get("5m:via_decorator|x=2") == 6
    mem.set("5m:via_decorator|x=5", "planted", 300)
    assert via_decorator(5) == "planted"


# --- memory: get / set / delete / metadata ----------------------------------------


def test_get_missing_returns_no_value(mem):
    assert mem.get("nope") is NO_VALUE


def test_set_get_roundtrip(mem):
    values = {
        "int": 1,
        "str": "text",
        "none": None,
        "float": 1.25,
        "bool": False,
        "bytes": b"\x00\xff",
        "tuple": (1, ("a", None)),
        "list": [1, [2]],
        "dict": {"a": {"b": [1, 2]}},
        "set": {1, 2},
        "frozenset": frozenset({3}),
        "big": 10**40,
        "box": Box([1, 2]),
    }
    for key, value in values.items():
        mem.set(key, value, 300)
    for key, value in values.items():
        got = mem.get(key)
        assert got == value, key
        assert type(got) is type(value), key


def test_stored_none_is_not_a_miss(mem):
    mem.set("n", None, 300)
    assert mem.get("n") is None
    assert mem.get_with_metadata("n")[0] is None


def test_set_overwrites(mem):
    mem.set("k", 1, 300)
    mem.set("k", 2, 300)
    assert mem.get("k") == 2
    assert mem.count() == 1


def test_get_with_metadata(mem):
    before = time.time()
    mem.set("k", {"v": 1}, 300)
    after = time.time()
    value, created_at = mem.get_with_metadata("k")
    assert value == {"v": 1}
    assert isinstance(created_at, float)
    assert before - 0.5 <= created_at <= after + 0.5


def test_get_with_metadata_missing(mem):
    value, created_at = mem.get_with_metadata("missing")
    assert value is NO_VALUE
    assert created_at is None


def test_delete(mem):
    mem.set("a", 1, 300)
    mem.set("b", 2, 300)
    mem.delete("a")
    assert mem.get("a") is NO_VALUE
    assert mem.get("b") == 2
    mem.delete("a")
    mem.delete("never-there")


def test_close_is_callable(mem, null):
    mem.close()
    null.close()


# --- keys / count / clear and glob patterns ----------------------------------------


@pytest.fixture
def filled(mem):
    for key in ("abc", "abd", "aXc", "b", "user|1", "user|22", "ABC", "5m:f||t||x=1"):
        mem.set(key, key, 300)
    return mem


def test_keys_is_an_iterator(filled):
    it = filled.keys()
    assert iter(it) is it
    assert sorted(it) == sorted(
        ["abc", "abd", "aXc", "b", "user|1", "user|22", "ABC", "5m:f||t||x=1"]
    )


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", ["5m:f||t||x=1", "ABC", "aXc", "abc", "abd", "b", "user|1", "user|22"]),
        ("a*", ["aXc", "abc", "abd"]),
        ("ab?", ["abc", "abd"]),
        ("a?c", ["aXc", "abc"]),
        ("ab[cd]", ["abc", "abd"]),
        ("ab[a-c]", ["abc"]),
        ("[Ab]*", ["ABC", "b"]),
        ("user|?", ["user|1"]),
        ("user|*", ["user|1", "user|22"]),
        ("*|t|*", ["5m:f||t||x=1"]),
        ("A*", ["ABC"]),
        ("abc", ["abc"]),
        ("zzz*", []),
    ],
)
def test_glob_patterns(filled, pattern, expected):
    assert sorted(filled.keys(pattern)) == expected
    assert filled.count(pattern) == len(expected)


def test_count_all(filled):
    assert filled.count() == 8


def test_clear_pattern_returns_count(filled):
    assert filled.clear("a*") == 3
    assert sorted(filled.keys()) == ["5m:f||t||x=1", "ABC", "b", "user|1", "user|22"]
    assert filled.clear("nothing*") == 0
    assert filled.clear("user|?") == 1
    assert filled.count() == 4


def test_clear_all_returns_count(filled):
    assert filled.clear() == 8
    assert filled.count() == 0
    assert list(filled.keys()) == []
    assert filled.clear() == 0


# --- copy semantics --------------------------------------------------------------


def test_mutating_value_after_set_does_not_change_cache(mem):
    value = {"a": [1, 2], "b": {"c": 3}}
    mem.set("k", value, 300)
    value["a"].append(99)
    value["b"]["c"] = -1
    value["new"] = True
    assert mem.get("k") == {"a": [1, 2], "b": {"c": 3}}


def test_mutating_returned_value_does_not_change_cache(mem):
    mem.set("k", {"a": [1, 2], "b": {"c": 3}}, 300)
    got = mem.get("k")
    got["a"].append(99)
    got["b"]["c"] = -1
    del got["a"]
    assert mem.get("k") == {"a": [1, 2], "b": {"c": 3}}
    got2, _ = mem.get_with_metadata("k")
    got2["b"]["c"] = "changed"
    assert mem.get("k") == {"a": [1, 2], "b": {"c": 3}}


def test_returned_values_are_independent(mem):
    mem.set("l", [[1], [2]], 300)
    first = mem.get("l")
    second = mem.get("l")
    assert first is not second
    first[0].append(5)
    assert second == [[1], [2]]


def test_user_objects_are_copied(mem):
    mem.set("box", Box([1]), 300)
    got = mem.get("box")
    got.items.append(2)
    assert mem.get("box") == Box([1])


def test_decorator_copy_semantics():
    calls = []

    @cachu.cache(ttl=300)
    def nested_result(x):
        calls.append(x)
        return {"x": x, "items": [1, 2], "meta": {"tags": ["a"]}}

    original = {"x": 1, "items": [1, 2], "meta": {"tags": ["a"]}}
    first = nested_result(1)  # the miss
    first["items"].append(3)
    first["meta"]["tags"].clear()
    second = nested_result(1)  # a hit
    assert second == original
    second["items"].append(4)
    second["meta"]["new"] = 1
    third = nested_result(1)
    assert third == original
    assert calls == [1]


@pytest.mark.parametrize(
    "make",
    [
        lambda: {"id": 1, "name": "a", "score": 1.5, "none": None},
        lambda: [1, "two", 3.0, (4, 5)],
        lambda: {1, "two", (3, 4)},
    ],
    ids=["dict", "list", "set"],
)
def test_flat_container_results_are_copied(make):
    """Containers of immutables take the one-level copy on a hit: each hit
    still returns a new container, and mutating it changes nothing cached."""

    @cachu.cache(ttl=300)
    def flat():
        return make()

    first = flat()
    second = flat()
    assert second == make() and second is not first
    for got in (first, second):
        if isinstance(got, dict):
            got["id"] = "changed"
            got["extra"] = True
        elif isinstance(got, list):
            got[0] = "changed"
            got.append("extra")
        else:
            got.add("extra")
    assert flat() == make()
    assert flat() is not flat()


def test_decorator_list_result_copy_semantics():
    @cachu.cache(ttl=300)
    def list_result():
        return [{"id": 1}, {"id": 2}]

    list_result().append("junk")
    got = list_result()
    got[0]["id"] = "changed"
    got.append("junk")
    assert list_result() == [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize(
    "value",
    [
        0,
        7,
        -3,
        10**30,
        1.5,
        "text",
        "",
        b"bytes",
        None,
        True,
        (1, "a", (2.5, None)),
        frozenset({"x"}),
        (),
    ],
    ids=repr,
)
def test_decorator_immutable_results(value):
    calls = []

    @cachu.cache(ttl=300)
    def immutable_result(x):
        calls.append(x)
        return value

    assert immutable_result(1) == value
    got = immutable_result(1)
    assert got == value
    assert type(got) is type(value)
    assert calls == [1]


# --- bad stored data ---------------------------------------------------------------


def test_value_that_fails_to_unpickle_is_a_miss(mem, monkeypatch):
    mem.set("vanishing", Vanishing(1), 300)
    mem.set("other", "ok", 300)
    monkeypatch.delattr(sys.modules[__name__], "Vanishing")  # as if the class was renamed
    assert mem.get("vanishing") is NO_VALUE
    assert "vanishing" not in list(mem.keys())
    assert mem.get("other") == "ok"


# --- expiry ----------------------------------------------------------------------


def test_expired_entries_are_dropped(mem):
    calls = []

    @cachu.cache(ttl=1)
    def short_lived_fn(x):
        calls.append(x)
        return [x]

    short_lived_fn(1)
    mem.set("short", "s", 1)
    mem.set("long", "l", 300)
    short_region = cachu.get_backend("memory", ttl=1)
    assert list(short_region.keys()) == ["1s:short_lived_fn|x=1"]

    time.sleep(1.1)

    assert mem.get("short") is NO_VALUE
    assert mem.get_with_metadata("short") == (NO_VALUE, None)
    assert list(mem.keys()) == ["long"]
    assert mem.count() == 1
    assert mem.count("s*") == 0
    assert mem.get("long") == "l"
    assert list(short_region.keys()) == []
    assert short_region.count() == 0
    assert short_lived_fn(1) == [1]
    assert calls == [1, 1]


# --- null backend ----------------------------------------------------------------


def test_null_backend_stores_nothing(null):
    null.set("k", {"v": 1}, 300)
    assert null.get("k") is NO_VALUE
    assert null.get_with_metadata("k") == (NO_VALUE, None)
    assert list(null.keys()) == []
    assert list(null.keys("*")) == []
    assert null.count() == 0
    assert null.count("*") == 0
    assert null.clear() == 0
    assert null.clear("k*") == 0
    null.delete("k")

"""Decorated calls, the same on every backend and both faces: a miss then
hits, the key (region, tag, key_prefix, exclude, ``_``-parameters), TTLs
(fixed, per result, expiry), ``cache_if``, ``validate``, ``_skip_cache`` and
``_overwrite_cache``, ``disable()``, and copies of mutable results."""

import time

import behaviour
import cachu
import pytest

face = behaviour.face
store = behaviour.store


class Calls(list):
    """The arguments a function under test was run with, in order."""


def test_miss_then_hit_stores_under_the_mangled_key(face, store):
    calls = Calls()
    result = {"id": 5, "tags": ("a", "b"), "score": 1.5, "blob": b"\x00\xff", "none": None}

    def record(n):
        calls.append(n)
        return result

    record = face.decorate(record, ttl=300)
    before = time.time()
    assert face.wait(record(5)) == result
    after = time.time()
    assert face.wait(record(5)) == result
    assert face.wait(record(n=5)) == result
    info = face.crud("cache_info", record)
    if not store.keeps:
        assert calls == [5, 5, 5]
        assert store.keys() == []
        assert (info.hits, info.misses, info.currsize) == (0, 3, 0)
        return
    assert calls == [5]
    assert store.keys() == ["5m:record|n=5"]
    assert store.value("5m:record|n=5") == result
    store.holds_pickle("5m:record|n=5", result)
    assert before - 1 <= store.created_at("5m:record|n=5") <= after + 1
    store.lives("5m:record|n=5", 300)
    assert (info.hits, info.misses, info.currsize) == (2, 1, 1)


def test_falsy_and_none_results_are_cached(face, store):
    calls = Calls()
    results = {"none": None, "zero": 0, "empty": "", "false": False, "list": []}

    def falsy(kind):
        calls.append(kind)
        return results[kind]

    falsy = face.decorate(falsy, ttl=300)
    for kind in results:
        assert face.wait(falsy(kind)) == results[kind]
        assert face.wait(falsy(kind)) == results[kind]
    assert len(calls) == (5 if store.keeps else 10)


@pytest.mark.parametrize(("ttl", "region"), [(59, "59s"), (300, "5m"), (3600, "1h"), (86400, "1d")])
def test_ttl_selects_the_region(face, store, ttl, region):
    def region_fn(n):
        return [n]

    region_fn = face.decorate(region_fn, ttl=ttl)
    assert face.wait(region_fn(1)) == [1]
    key = f"{region}:region_fn|n=1"
    if store.keeps:
        assert store.keys(ttl) == [key]
        assert store.value(key, ttl) == [1]
        store.lives(key, ttl)


def test_short_ttl_expires(face, store):
    calls = Calls()

    def brief(n):
        calls.append(n)
        return n

    brief = face.decorate(brief, ttl=1)
    face.wait(brief(1))
    face.wait(brief(1))
    assert calls == ([1] if store.keeps else [1, 1])
    time.sleep(1.3)
    assert cachu.get_backend(store.name, behaviour.PACKAGE, ttl=1).count() == 0
    face.wait(brief(1))
    assert calls == ([1, 1] if store.keeps else [1, 1, 1])


def test_callable_ttl_uses_the_dynamic_region_and_the_result_ttl(face, store):
    calls = Calls()

    def dyn(n):
        calls.append(n)
        return {"n": n, "ttl": 120 if n else 0}

    dyn = face.decorate(dyn, ttl=lambda res: res["ttl"])
    assert face.wait(dyn(1)) == {"n": 1, "ttl": 120}
    assert face.wait(dyn(1)) == {"n": 1, "ttl": 120}
    if store.keeps:
        assert store.keys(-1) == ["-1s:dyn|n=1"]
        store.lives("-1s:dyn|n=1", 120)
    # A TTL of 0 stores nothing, and leaves no lock behind: the next call runs.
    assert face.wait(dyn(0)) == {"n": 0, "ttl": 0}
    assert face.wait(dyn(0)) == {"n": 0, "ttl": 0}
    assert calls == ([1, 0, 0] if store.keeps else [1, 1, 0, 0])
    assert store.keys(-1) == (["-1s:dyn|n=1"] if store.keeps else [])
    store.no_locks()


def test_tag_and_key_prefix_in_the_key(face, store):
    store.configure(key_prefix="v1:")

    def get_user(user_id, verbose=False):
        return {"id": user_id}

    get_user = face.decorate(get_user, ttl=300, tag="user|admin")
    face.wait(get_user(123))
    expected = ["5m:v1:get_user||user.admin||user_id=123 verbose=False"]
    assert store.keys() == (expected if store.keeps else [])


def test_exclude_and_underscore_parameters_leave_the_key(face, store):
    calls = Calls()

    def process(logger, context, user_id, _trace=None):
        calls.append((logger, user_id))
        return user_id + 1

    process = face.decorate(process, ttl=300, exclude={"logger", "context"})
    assert face.wait(process("log-a", "ctx-a", 5, _trace=1)) == 6
    assert face.wait(process("log-b", "ctx-b", 5, _trace=2)) == 6
    if store.keeps:
        assert calls == [("log-a", 5)]
        assert store.keys() == ["5m:process|user_id=5"]
    else:
        assert calls == [("log-a", 5), ("log-b", 5)]


def test_cache_if_rejected_result_is_not_stored_and_lock_released(face, store):
    calls = Calls()

    def find(n):
        calls.append(n)
        return None if n < 0 else n

    find = face.decorate(find, ttl=300, cache_if=lambda res: res is not None)
    assert face.wait(find(-1)) is None
    assert face.wait(find(-1)) is None
    assert calls == [-1, -1]
    assert store.keys() == []
    store.no_locks()
    assert face.wait(find(2)) == 2
    assert face.wait(find(2)) == 2
    assert calls == ([-1, -1, 2] if store.keeps else [-1, -1, 2, 2])
    assert store.keys() == (["5m:find|n=2"] if store.keeps else [])


def test_validate_sees_created_at_and_rejection_recomputes(face, store):
    seen = []
    accept = {"ok": True}
    calls = Calls()

    def check(entry):
        seen.append(entry)
        return accept["ok"]

    def priced(symbol):
        calls.append(symbol)
        return {"symbol": symbol, "n": len(calls)}

    priced = face.decorate(priced, ttl=300, validate=check)
    key = "5m:priced|symbol='X'"
    if not store.keeps:  # nothing found, nothing to validate
        assert face.wait(priced("X")) == {"symbol": "X", "n": 1}
        assert face.wait(priced("X")) == {"symbol": "X", "n": 2}
        assert seen == []
        return
    before = time.time()
    assert face.wait(priced("X")) == {"symbol": "X", "n": 1}
    assert face.wait(priced("X")) == {"symbol": "X", "n": 1}
    assert len(seen) == 1
    created = store.created_at(key)
    assert seen[0].created_at == created
    assert seen[0].value == {"symbol": "X", "n": 1}
    assert 0 <= seen[0].age < 5
    assert before - 1 <= created <= time.time() + 1

    accept["ok"] = False
    assert face.wait(priced("X")) == {"symbol": "X", "n": 2}
    assert store.value(key) == {"symbol": "X", "n": 2}
    assert calls == ["X", "X"]
    store.no_locks()


def test_skip_and_overwrite_cache(face, store):
    calls = Calls()

    def counter(n):
        calls.append(n)
        return len(calls)

    counter = face.decorate(counter, ttl=300)
    assert face.wait(counter(1, _skip_cache=True)) == 1
    assert store.keys() == []
    assert face.wait(counter(1)) == 2
    assert face.wait(counter(1, _skip_cache=True)) == 3
    if not store.keeps:
        assert face.wait(counter(1)) == 4
        return
    assert face.wait(counter(1)) == 2
    assert face.wait(counter(1, _overwrite_cache=True)) == 4
    assert store.value("5m:counter|n=1") == 4
    assert face.wait(counter(1)) == 4
    assert calls == [1, 1, 1, 1]
    store.no_locks()


def test_disable_touches_no_backend(face, store):
    calls = Calls()

    def plain(n):
        calls.append(n)
        return n

    plain = face.decorate(plain, ttl=300)
    cachu.disable()
    try:
        face.wait(plain(1))
        face.wait(plain(1))
    finally:
        cachu.enable()
    assert calls == [1, 1]
    assert store.keys() == []
    face.wait(plain(1))
    face.wait(plain(1))
    assert calls == ([1, 1, 1] if store.keeps else [1, 1, 1, 1])
    assert store.keys() == (["5m:plain|n=1"] if store.keeps else [])


def test_mutable_results_are_independent_copies(face, store):
    def items(n):
        return {"list": [1, 2]}

    items = face.decorate(items, ttl=300)
    first = face.wait(items(1))
    first["list"].append(99)
    second = face.wait(items(1))
    assert second == {"list": [1, 2]}
    second["list"].append(5)
    assert face.wait(items(1)) == {"list": [1, 2]}
    if not store.keeps:
        return
    # What .set() and a backend object store is a copy too.
    value = {"x": [1]}
    face.wait(items.set(value, n=2))
    value["x"].append(2)
    assert face.wait(items.get(n=2)) == {"x": [1]}
    b = face.backend(store.name, 300)
    obj = [1]
    face.wait(b.set("5m:manual|k=1", obj, 300))
    obj.append(2)
    got = face.wait(b.get("5m:manual|k=1"))
    assert got == [1]
    got.append(3)
    assert face.wait(b.get("5m:manual|k=1")) == [1]

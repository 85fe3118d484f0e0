"""Backend objects (``get_backend`` for the sync face, ``get_async_backend``
for the async one): the same answers on every backend and both faces."""

import time

import behaviour
import cachu
import pytest
from cachu.backends import NO_VALUE, AsyncBackend
from faces import make_face

face = behaviour.face
store = behaviour.store


@pytest.fixture
def b(face, store):
    return face.backend(store.name, 300)


def test_a_missing_key_is_no_value(face, b):
    assert face.wait(b.get("5m:nope")) is NO_VALUE
    assert face.wait(b.get_with_metadata("5m:nope")) == (NO_VALUE, None)


def test_set_get_and_metadata(face, store, b):
    before = time.time()
    face.wait(b.set("5m:manual|a=1", {"a": 1}, 300))
    face.wait(b.set("5m:manual|a=2", [1, 2], 300))
    face.wait(b.set("5m:manual|none", None, 300))
    face.wait(b.set("other:x", "x", 60))
    after = time.time()
    if not store.keeps:
        assert face.wait(b.get("5m:manual|a=1")) is NO_VALUE
        assert face.keys(b) == []
        return
    assert face.wait(b.get("5m:manual|a=1")) == {"a": 1}
    assert face.wait(b.get("5m:manual|none")) is None  # stored None is no miss
    value, created = face.wait(b.get_with_metadata("5m:manual|a=2"))
    assert value == [1, 2]
    assert before - 1 <= created <= after + 1
    store.holds_pickle("5m:manual|a=1", {"a": 1})
    store.lives("5m:manual|a=1", 300)
    store.lives("other:x", 60)
    # Overwrite; and what is read back is a copy.
    face.wait(b.set("5m:manual|a=1", {"a": "one"}, 300))
    got = face.wait(b.get("5m:manual|a=1"))
    assert got == {"a": "one"}
    got["a"] = "changed"
    assert face.wait(b.get("5m:manual|a=1")) == {"a": "one"}


def test_keys_count_delete_and_clear_with_globs(face, store, b):
    for key in ("user:1", "user:2", "user:10", "item:1"):
        face.wait(b.set(key, key, 300))
    if not store.keeps:
        assert (face.keys(b), face.wait(b.count()), face.wait(b.clear())) == ([], 0, 0)
        return
    assert face.keys(b) == ["item:1", "user:1", "user:10", "user:2"]
    if face.name == "sync":  # an iterator, as 0.2.7's
        keys = b.keys("user:*")
        assert iter(keys) is keys
    assert face.keys(b, "user:?") == ["user:1", "user:2"]
    assert face.keys(b, "user:*") == ["user:1", "user:10", "user:2"]
    assert face.keys(b, "[iu]*:1") == ["item:1", "user:1"]
    assert face.wait(b.count()) == 4
    assert face.wait(b.count("user:*")) == 3
    assert face.wait(b.count("user:[12]")) == 2
    assert face.wait(b.count("none:*")) == 0

    face.wait(b.delete("user:1"))
    assert face.wait(b.get("user:1")) is NO_VALUE
    face.wait(b.delete("user:1"))  # missing: harmless
    assert face.wait(b.count()) == 3

    assert face.wait(b.clear("user:*")) == 2
    assert face.keys(b) == ["item:1"]
    assert face.wait(b.clear("user:*")) == 0
    assert face.wait(b.clear()) == 1
    assert face.wait(b.count()) == 0
    store.no_locks()


def test_closing_leaves_the_entries_and_the_object_usable(face, store, b):
    face.wait(b.set("5m:k|x=1", 1, 300))
    face.wait(b.close())
    assert face.wait(b.get("5m:k|x=1")) == (1 if store.keeps else NO_VALUE)


def test_a_backend_object_and_the_decorator_share_entries(face, store, b):
    def shared(x):
        return x * 2

    shared = face.decorate(shared, ttl=300)
    face.wait(shared(2))
    face.wait(b.set("5m:shared|x=3", "set by hand", 300))
    if store.keeps:
        assert face.wait(b.get("5m:shared|x=2")) == 4
        assert face.wait(shared(3)) == "set by hand"
    else:
        assert face.wait(shared(3)) == 6


def test_the_async_face_and_its_aliases(store):
    """``get_async_backend`` gives an ``AsyncBackend`` (every method also
    under its ``a``-name), and a sync backend object has the awaitable
    methods too; both reach the same entries."""
    face = make_face("async")
    try:
        ab = face.backend(store.name, 300)
        assert isinstance(ab, AsyncBackend)
        assert ab.kind == store.name
        sync = cachu.get_backend(store.name, behaviour.PACKAGE, ttl=300)
        face.wait(ab.aset("5m:alias|a=1", {"a": 1}, 300))
        face.wait(sync.aset("5m:alias|a=2", {"a": 2}, 300))
        kept = store.keeps
        assert face.wait(ab.aget("5m:alias|a=2")) == ({"a": 2} if kept else NO_VALUE)
        assert face.wait(sync.aget("5m:alias|a=1")) == ({"a": 1} if kept else NO_VALUE)
        meta = face.wait(ab.aget_with_metadata("5m:alias|a=1"))
        assert meta[0] == ({"a": 1} if kept else NO_VALUE)
        assert meta == face.wait(sync.aget_with_metadata("5m:alias|a=1"))

        async def listed(obj):
            return sorted([k async for k in obj.akeys("5m:alias|*")])

        names = ["5m:alias|a=1", "5m:alias|a=2"] if kept else []
        assert face.run(listed(ab)) == face.run(listed(sync)) == names
        assert face.wait(ab.acount()) == face.wait(sync.acount()) == len(names)
        face.wait(sync.adelete("5m:alias|a=1"))
        face.wait(ab.adelete("5m:alias|a=1"))
        assert face.wait(ab.aclear()) == (1 if kept else 0)
        assert face.wait(sync.aclear()) == 0
        face.wait(ab.aclose())
        face.wait(sync.aclose())
    finally:
        face.close()

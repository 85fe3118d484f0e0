"""The helpers of a decorated function (``.get`` ``.set`` ``.invalidate``
``.refresh`` ``.original``), the same on every backend and both faces."""

import behaviour
import pytest

face = behaviour.face
store = behaviour.store

KEY = "5m:get_user||users||detail=False user_id=1"


@pytest.fixture
def counted(face, store):
    """A decorated function whose result counts its own runs."""
    state = {"n": 0, "args": []}

    def get_user(user_id, detail=False):
        state["n"] += 1
        state["args"].append((user_id, detail))
        return {"id": user_id, "n": state["n"]}

    fn = face.decorate(get_user, ttl=300, tag="users")
    fn.state = state
    return fn


def test_get_missing_raises_key_error(face, counted):
    with pytest.raises(KeyError):
        face.wait(counted.get(user_id=1))


def test_get_missing_with_default(face, counted):
    marker = object()
    assert face.wait(counted.get(default=marker, user_id=1)) is marker
    assert face.wait(counted.get(default=None, user_id=1)) is None
    assert face.wait(counted.get(marker, user_id=1)) is marker
    assert counted.state["n"] == 0


def test_get_after_call(face, store, counted):
    face.wait(counted(1))
    if not store.keeps:
        assert face.wait(counted.get(default="d", user_id=1)) == "d"
        return
    assert face.wait(counted.get(user_id=1)) == {"id": 1, "n": 1}
    assert face.wait(counted.get(user_id=1, detail=False)) == {"id": 1, "n": 1}
    assert face.wait(counted.get(default="d", user_id=1, detail=True)) == "d"
    assert counted.state["n"] == 1


def test_set_then_call_is_a_hit(face, store, counted):
    face.wait(counted.set({"id": 1, "name": "Test"}, user_id=1))
    if not store.keeps:
        assert face.wait(counted.get(default="none", user_id=1)) == "none"
        assert face.wait(counted(1)) == {"id": 1, "n": 1}
        assert store.keys() == []
        return
    assert face.wait(counted(1)) == {"id": 1, "name": "Test"}
    assert face.wait(counted(user_id=1)) == {"id": 1, "name": "Test"}
    assert face.wait(counted.get(user_id=1)) == {"id": 1, "name": "Test"}
    assert counted.state["n"] == 0
    assert store.keys() == [KEY]
    assert store.value(KEY) == {"id": 1, "name": "Test"}
    store.lives(KEY, 300)


def test_set_none_is_stored_not_the_default(face, store, counted):
    face.wait(counted.set(None, user_id=3))
    if store.keeps:
        assert face.wait(counted.get(default="fallback", user_id=3)) is None
        assert face.wait(counted(3)) is None
        assert counted.state["n"] == 0


def test_set_overwrites(face, store, counted):
    face.wait(counted(1))
    face.wait(counted.set("replaced", user_id=1))
    assert face.wait(counted(1)) == ("replaced" if store.keeps else {"id": 1, "n": 2})


def test_invalidate(face, store, counted):
    assert face.wait(counted(1))["n"] == 1
    assert face.wait(counted(2))["n"] == 2
    face.wait(counted.invalidate(user_id=1))
    assert face.wait(counted.get(default=None, user_id=1)) is None
    expected = ["5m:get_user||users||detail=False user_id=2"]
    assert store.keys() == (expected if store.keeps else [])
    assert face.wait(counted(1))["n"] == 3
    assert face.wait(counted(2))["n"] == (2 if store.keeps else 4)
    # Missing: harmless.
    face.wait(counted.invalidate(user_id=42))
    face.wait(counted.invalidate(user_id=42))
    assert face.wait(counted(42)) == {"id": 42, "n": 4 if store.keeps else 5}


def test_refresh(face, store, counted):
    assert face.wait(counted(1))["n"] == 1
    assert face.wait(counted.refresh(user_id=1)) == {"id": 1, "n": 2}
    if not store.keeps:
        assert face.wait(counted(1)) == {"id": 1, "n": 3}
        return
    assert face.wait(counted(1)) == {"id": 1, "n": 2}
    assert face.wait(counted.get(user_id=1)) == {"id": 1, "n": 2}
    assert counted.state["args"] == [(1, False), (1, False)]
    assert store.value(KEY) == {"id": 1, "n": 2}
    store.no_locks()


def test_refresh_of_a_missing_entry(face, store, counted):
    assert face.wait(counted.refresh(user_id=5)) == {"id": 5, "n": 1}
    assert face.wait(counted(5)) == {"id": 5, "n": 1 if store.keeps else 2}


def test_original_bypasses_the_cache(face, store, counted):
    assert face.wait(counted(1))["n"] == 1
    assert face.wait(counted.original(1)) == {"id": 1, "n": 2}
    assert face.wait(counted.original(1, detail=True)) == {"id": 1, "n": 3}
    assert face.wait(counted.original(user_id=7)) == {"id": 7, "n": 4}
    if store.keeps:
        assert face.wait(counted(1))["n"] == 1
        assert store.keys() == [KEY]
        assert store.value(KEY) == {"id": 1, "n": 1}
    else:
        assert store.keys() == []


def test_original_gets_all_arguments(face, store):
    received = []

    def wide(a, *args, _hidden=None, **kwargs):
        received.append((a, args, _hidden, kwargs))
        return a

    wide = face.decorate(wide, ttl=300)
    face.wait(wide.original(1, 2, 3, _hidden="h", k="v"))
    assert received == [(1, (2, 3), "h", {"k": "v"})]


def test_helpers_follow_the_key_prefix(face, store):
    store.configure(key_prefix="v2:")

    def prefixed(x):
        return x * 2

    prefixed = face.decorate(prefixed, ttl=60)
    face.wait(prefixed(4))
    if store.keeps:
        assert store.keys(60) == ["1m:v2:prefixed|x=4"]
        assert face.wait(prefixed.get(x=4)) == 8
    face.wait(prefixed.invalidate(x=4))
    with pytest.raises(KeyError):
        face.wait(prefixed.get(x=4))
    assert store.keys(60) == []


def test_helpers_with_a_callable_ttl(face, store):
    counter = {"n": 0}

    def dyn_helper(x):
        counter["n"] += 1
        return counter["n"]

    dyn_helper = face.decorate(dyn_helper, ttl=lambda r: 300)
    assert face.wait(dyn_helper(1)) == 1
    if store.keeps:
        assert face.wait(dyn_helper.get(x=1)) == 1
    face.wait(dyn_helper.invalidate(x=1))
    assert face.wait(dyn_helper.get(default=None, x=1)) is None
    assert face.wait(dyn_helper.refresh(x=1)) == 2
    assert face.wait(dyn_helper(1)) == (2 if store.keeps else 3)

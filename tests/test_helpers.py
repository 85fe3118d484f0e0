"""Helper methods attached to decorated functions: .get .set .invalidate .refresh .original."""

import cachu
import pytest


@pytest.fixture
def counted():
    """A decorated function whose result counts its own calls."""
    state = {"n": 0, "args": []}

    @cachu.cache(ttl=300, tag="users")
    def get_user(user_id, detail=False):
        state["n"] += 1
        state["args"].append((user_id, detail))
        return {"id": user_id, "n": state["n"]}

    get_user.state = state
    return get_user


def test_get_missing_raises_key_error(counted):
    with pytest.raises(KeyError):
        counted.get(user_id=1)


def test_get_missing_with_default(counted):
    marker = object()
    assert counted.get(default=marker, user_id=1) is marker
    assert counted.get(default=None, user_id=1) is None
    assert counted.state["n"] == 0


def test_get_after_call(counted):
    counted(1)
    assert counted.get(user_id=1) == {"id": 1, "n": 1}
    assert counted.get(user_id=1, detail=False) == {"id": 1, "n": 1}
    assert counted.get(default="d", user_id=1, detail=True) == "d"
    assert counted.state["n"] == 1


def test_get_does_not_call_function(counted):
    counted.get(default=None, user_id=9)
    assert counted.state["n"] == 0


def test_get_returns_stored_none_not_default(counted):
    counted.set(None, user_id=3)
    assert counted.get(default="fallback", user_id=3) is None
    assert counted(3) is None
    assert counted.state["n"] == 0


def test_set_then_call_is_hit(counted, region_keys):
    counted.set({"id": 1, "name": "Test"}, user_id=1)
    assert counted(1) == {"id": 1, "name": "Test"}
    assert counted(user_id=1) == {"id": 1, "name": "Test"}
    assert counted.state["n"] == 0
    assert region_keys(300) == ["5m:get_user||users||detail=False user_id=1"]


def test_set_overwrites(counted):
    counted(1)
    counted.set("replaced", user_id=1)
    assert counted(1) == "replaced"
    assert counted.state["n"] == 1


def test_invalidate(counted):
    assert counted(1)["n"] == 1
    assert counted(2)["n"] == 2
    counted.invalidate(user_id=1)
    assert counted.get(default=None, user_id=1) is None
    assert counted(1)["n"] == 3
    assert counted(2)["n"] == 2


def test_invalidate_missing_is_harmless(counted):
    counted.invalidate(user_id=42)
    counted.invalidate(user_id=42)
    assert counted(42)["n"] == 1


def test_refresh(counted):
    assert counted(1)["n"] == 1
    refreshed = counted.refresh(user_id=1)
    assert refreshed == {"id": 1, "n": 2}
    assert counted(1) == {"id": 1, "n": 2}
    assert counted.get(user_id=1) == {"id": 1, "n": 2}
    assert counted.state["args"] == [(1, False), (1, False)]


def test_refresh_of_missing_entry(counted):
    assert counted.refresh(user_id=5) == {"id": 5, "n": 1}
    assert counted(5) == {"id": 5, "n": 1}


def test_original_bypasses_cache(counted, region_keys):
    assert counted(1)["n"] == 1
    assert counted.original(1) == {"id": 1, "n": 2}
    assert counted.original(1, detail=True) == {"id": 1, "n": 3}
    assert counted.original(user_id=7) == {"id": 7, "n": 4}
    assert counted(1)["n"] == 1
    assert region_keys(300) == ["5m:get_user||users||detail=False user_id=1"]


def test_original_gets_all_arguments():
    received = []

    @cachu.cache(ttl=300)
    def wide(a, *args, _hidden=None, **kwargs):
        received.append((a, args, _hidden, kwargs))
        return a

    wide.original(1, 2, 3, _hidden="h", k="v")
    assert received == [(1, (2, 3), "h", {"k": "v"})]


def test_helpers_follow_key_prefix():
    cachu.configure(key_prefix="v2:")

    @cachu.cache(ttl=60)
    def prefixed(x):
        return x * 2

    prefixed(4)
    assert prefixed.get(x=4) == 8
    prefixed.invalidate(x=4)
    with pytest.raises(KeyError):
        prefixed.get(x=4)


def test_helpers_with_callable_ttl():
    counter = {"n": 0}

    @cachu.cache(ttl=lambda r: 300)
    def dyn_helper(x):
        counter["n"] += 1
        return counter["n"]

    assert dyn_helper(1) == 1
    assert dyn_helper.get(x=1) == 1
    dyn_helper.invalidate(x=1)
    assert dyn_helper.get(default=None, x=1) is None
    assert dyn_helper.refresh(x=1) == 2
    assert dyn_helper(1) == 2


def test_helpers_on_null_backend():
    @cachu.cache(ttl=300, backend="null")
    def null_helper(x):
        return x

    null_helper.set("v", x=1)
    assert null_helper.get(default="none", x=1) == "none"
    null_helper.invalidate(x=1)
    assert null_helper.refresh(x=1) == 1
    assert null_helper.original(2) == 2

"""The @cache decorator on synchronous functions (memory and null backends)."""

import inspect
import time

import cachu
import pytest
from cachu.types import CacheEntry


def test_second_call_is_a_hit():
    calls = []

    @cachu.cache(ttl=300)
    def square(x):
        calls.append(x)
        return x * x

    assert square(3) == 9
    assert square(3) == 9
    assert square(4) == 16
    assert calls == [3, 4]


def test_none_result_is_cached():
    calls = []

    @cachu.cache(ttl=300)
    def returns_none(x):
        calls.append(x)

    assert returns_none(1) is None
    assert returns_none(1) is None
    assert calls == [1]


def test_falsy_results_are_cached():
    calls = []

    @cachu.cache(ttl=300)
    def falsy(kind):
        calls.append(kind)
        return {"zero": 0, "empty": "", "false": False, "list": []}[kind]

    for kind in ("zero", "empty", "false", "list"):
        first = falsy(kind)
        assert falsy(kind) == first
    assert calls == ["zero", "empty", "false", "list"]


def test_default_ttl_is_300(region_keys):
    @cachu.cache()
    def default_ttl(x):
        return x

    default_ttl(1)
    assert region_keys(300) == ["5m:default_ttl|x=1"]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, 2), {}), ((1,), {"z": 2}), ((1,), {"a": 1})],
    ids=["missing", "too-many", "unexpected", "duplicate"],
)
def test_bad_call_arguments_raise_type_error(region_keys, args, kwargs):
    @cachu.cache(ttl=300)
    def needs_one(a):
        return a

    with pytest.raises(TypeError):
        needs_one(*args, **kwargs)
    assert region_keys(300) == []


def test_recursive_cached_function():
    calls = []

    @cachu.cache(ttl=300)
    def fib(n):
        calls.append(n)
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    assert fib(30) == 832040
    assert sorted(calls) == list(range(31))
    assert fib(30) == 832040
    assert len(calls) == 31


def test_cache_used_while_computing():
    """The function may use the cache (other keys, clearing, helpers) while it runs."""

    @cachu.cache(ttl=300)
    def inner_value(x):
        return x + 1

    @cachu.cache(ttl=300)
    def outer_value(x):
        inner_value.invalidate(x=x)
        value = inner_value(x)
        cachu.cache_info(inner_value)
        list(cachu.get_backend("memory", ttl=300).keys())
        cachu.cache_clear(backend="memory", ttl=60)
        return value * 10

    assert outer_value(1) == 20
    assert outer_value.get(x=1) == 20
    assert inner_value.get(x=1) == 2


# --- ttl ------------------------------------------------------------------------


def test_callable_ttl_receives_result(region_keys):
    seen = []

    def ttl_of(result):
        seen.append(result)
        return result["cache_seconds"]

    @cachu.cache(ttl=ttl_of)
    def dyn_ttl(key):
        return {"key": key, "cache_seconds": 600}

    assert dyn_ttl("a") == {"key": "a", "cache_seconds": 600}
    assert dyn_ttl("a") == {"key": "a", "cache_seconds": 600}
    assert seen == [{"key": "a", "cache_seconds": 600}]
    assert region_keys(-1) == ["-1s:dyn_ttl|key='a'"]


def test_callable_ttl_returning_zero_is_not_stored(region_keys):
    calls = []

    @cachu.cache(ttl=lambda result: 0 if result < 0 else 300)
    def zero_ttl(x):
        calls.append(x)
        return x

    zero_ttl(-1)
    zero_ttl(-1)
    zero_ttl(5)
    zero_ttl(5)
    assert calls == [-1, -1, 5]
    assert region_keys(-1) == ["-1s:zero_ttl|x=5"]


@pytest.mark.parametrize("ttl", [0, -5])
def test_zero_or_negative_ttl_never_stores(region_keys, ttl):
    calls = []

    @cachu.cache(ttl=ttl)
    def never_stored(x):
        calls.append(x)
        return [x]

    assert never_stored(1) == [1]
    assert never_stored(1) == [1]
    assert never_stored(1) == [1]
    assert calls == [1, 1, 1]
    assert region_keys(ttl) == []


# --- backends -------------------------------------------------------------------


def test_null_backend_always_calls(region_keys):
    calls = []

    @cachu.cache(ttl=300, backend="null")
    def passthrough(x):
        calls.append(x)
        return x

    passthrough(1)
    passthrough(1)
    assert calls == [1, 1]
    assert region_keys(300) == []
    assert region_keys(300, backend="null") == []


def test_configured_default_backend_used():
    cachu.configure(backend="null")
    calls = []

    @cachu.cache(ttl=300)
    def uses_config_backend(x):
        calls.append(x)
        return x

    uses_config_backend(1)
    uses_config_backend(1)
    assert calls == [1, 1]


def test_explicit_backend_overrides_config(region_keys):
    cachu.configure(backend="null")
    calls = []

    @cachu.cache(ttl=300, backend="memory")
    def explicit_memory(x):
        calls.append(x)
        return x

    explicit_memory(1)
    explicit_memory(1)
    assert calls == [1]
    assert region_keys(300) == ["5m:explicit_memory|x=1"]


# --- cache_if -------------------------------------------------------------------


def test_cache_if_false_is_not_stored(region_keys):
    calls = []
    seen = []

    def only_truthy(result):
        seen.append(result)
        return bool(result)

    @cachu.cache(ttl=300, cache_if=only_truthy)
    def maybe(x):
        calls.append(x)
        return x

    assert maybe(0) == 0
    assert maybe(0) == 0
    assert maybe(2) == 2
    assert maybe(2) == 2
    assert calls == [0, 0, 2]
    assert seen == [0, 0, 2]
    assert region_keys(300) == ["5m:maybe|x=2"]


def test_cache_if_none_results():
    calls = []

    @cachu.cache(ttl=300, cache_if=lambda r: r is not None)
    def find(email):
        calls.append(email)
        return None if email == "missing" else {"email": email}

    find("missing")
    find("missing")
    find("a@b")
    find("a@b")
    assert calls == ["missing", "missing", "a@b"]


# --- validate -------------------------------------------------------------------


def test_validate_receives_cache_entry():
    entries = []

    def check(entry):
        entries.append(entry)
        return True

    @cachu.cache(ttl=300, validate=check)
    def validated(x):
        return {"x": x}

    before = time.time()
    validated(1)
    after = time.time()
    assert entries == []  # not consulted on a plain miss
    assert validated(1) == {"x": 1}
    assert entries
    entry = entries[-1]
    assert isinstance(entry, CacheEntry)
    assert entry.value == {"x": 1}
    assert before - 0.5 <= entry.created_at <= after + 0.5
    assert 0 <= entry.age < 30


def test_validate_false_recomputes_and_overwrites():
    counter = {"n": 0}
    accept = {"ok": False}

    @cachu.cache(ttl=300, validate=lambda entry: accept["ok"])
    def versioned(x):
        counter["n"] += 1
        return counter["n"]

    assert versioned(1) == 1
    assert versioned(1) == 2  # rejected, recomputed, stored
    accept["ok"] = True
    assert versioned(1) == 2  # the recomputed value was stored
    assert versioned.get(x=1) == 2


def test_validate_on_value():
    counter = {"n": 0}

    @cachu.cache(ttl=300, validate=lambda e: e.value["version"] == 2)
    def config_doc():
        counter["n"] += 1
        return {"version": counter["n"]}

    assert config_doc() == {"version": 1}
    assert config_doc() == {"version": 2}
    assert config_doc() == {"version": 2}
    assert counter["n"] == 2


# --- per-call control ------------------------------------------------------------


def test_skip_cache_reads_and_writes_nothing(region_keys):
    counter = {"n": 0}

    @cachu.cache(ttl=300)
    def skippable(x):
        counter["n"] += 1
        return counter["n"]

    assert skippable(1, _skip_cache=True) == 1
    assert region_keys(300) == []
    assert skippable(1) == 2
    assert skippable(1, _skip_cache=True) == 3
    assert skippable(1) == 2
    assert skippable(1, _skip_cache=False) == 2


def test_overwrite_cache_recomputes_and_stores():
    counter = {"n": 0}

    @cachu.cache(ttl=300)
    def overwritable(x):
        counter["n"] += 1
        return counter["n"]

    assert overwritable(1) == 1
    assert overwritable(1) == 1
    assert overwritable(1, _overwrite_cache=True) == 2
    assert overwritable(1) == 2
    assert overwritable(1, _overwrite_cache=False) == 2


def test_control_flags_are_not_passed_to_function():
    received = []

    @cachu.cache(ttl=300)
    def strict(x):
        return x

    @cachu.cache(ttl=300)
    def loose(x, **kwargs):
        received.append(dict(kwargs))
        return x

    assert strict(1, _skip_cache=True) == 1
    assert strict(2, _overwrite_cache=True) == 2
    assert loose(1, _skip_cache=True) == 1
    assert loose(2, _overwrite_cache=True) == 2
    assert loose(3, _skip_cache=False, _overwrite_cache=False, extra=1) == 3
    assert received == [{}, {}, {"extra": 1}]


# --- disable / enable ------------------------------------------------------------


def test_disable_bypasses_cache(region_keys):
    calls = []

    @cachu.cache(ttl=300)
    def switchable(x):
        calls.append(x)
        return x

    cachu.disable()
    switchable(1)
    switchable(1)
    assert calls == [1, 1]
    assert region_keys(300) == []
    cachu.enable()
    switchable(1)
    switchable(1)
    assert calls == [1, 1, 1]


def test_disable_does_not_read_existing_entries():
    counter = {"n": 0}

    @cachu.cache(ttl=300)
    def stale_when_disabled(x):
        counter["n"] += 1
        return counter["n"]

    assert stale_when_disabled(1) == 1
    cachu.disable()
    assert stale_when_disabled(1) == 2
    cachu.enable()
    assert stale_when_disabled(1) == 1


# --- methods --------------------------------------------------------------------


def test_instance_method():
    calls = []

    class Repository:
        def __init__(self, prefix):
            self.prefix = prefix

        @cachu.cache(ttl=300)
        def fetch(self, item_id):
            calls.append(item_id)
            return f"{self.prefix}-{item_id}"

    repo = Repository("r")
    assert repo.fetch(1) == "r-1"
    assert repo.fetch(1) == "r-1"
    assert repo.fetch(item_id=2) == "r-2"
    # self is not part of the key: another instance shares the entry
    assert Repository("other").fetch(1) == "r-1"
    assert calls == [1, 2]


def test_classmethod():
    calls = []

    class Users:
        DEFAULT = (("id", 0),)

        @classmethod
        @cachu.cache(ttl=300)
        def default_user(cls):
            calls.append(cls)
            return dict(cls.DEFAULT)

        @classmethod
        @cachu.cache(ttl=300)
        def by_id(cls, user_id):
            calls.append(user_id)
            return {"id": user_id}

    assert Users.default_user() == {"id": 0}
    assert Users().default_user() == {"id": 0}
    assert Users.by_id(5) == {"id": 5}
    assert Users.by_id(5) == {"id": 5}
    assert calls == [Users, 5]


def test_staticmethod():
    calls = []

    class Guests:
        @staticmethod
        @cachu.cache(ttl=300)
        def guest(n=0):
            calls.append(n)
            return {"id": n, "name": "Guest"}

    assert Guests.guest() == {"id": 0, "name": "Guest"}
    assert Guests().guest() == {"id": 0, "name": "Guest"}
    assert Guests.guest(0) == {"id": 0, "name": "Guest"}
    assert calls == [0]


def test_helpers_on_method():
    class Store:
        @cachu.cache(ttl=300)
        def item(self, item_id):
            return {"item": item_id}

    Store().item(4)
    assert Store.item.get(item_id=4) == {"item": 4}
    assert cachu.cache_get(Store.item, item_id=4) == {"item": 4}


# --- metadata -------------------------------------------------------------------


def module_level_target(a, b=1):
    """Docstring of the target."""
    return a + b


def test_metadata_preserved():
    decorated = cachu.cache(ttl=300)(module_level_target)
    assert decorated.__name__ == "module_level_target"
    assert decorated.__doc__ == "Docstring of the target."
    assert decorated.__module__ == module_level_target.__module__
    assert decorated.__qualname__ == "module_level_target"
    assert decorated.__wrapped__ is module_level_target
    assert decorated(1) == 2


def test_nested_metadata_preserved():
    def inner_target(x):
        """Inner doc."""
        return x

    decorated = cachu.cache(ttl=60)(inner_target)
    assert decorated.__name__ == "inner_target"
    assert decorated.__qualname__ == inner_target.__qualname__
    assert decorated.__qualname__.endswith("<locals>.inner_target")
    assert decorated.__doc__ == "Inner doc."
    assert decorated.__wrapped__ is inner_target
    assert not inspect.iscoroutinefunction(decorated)


def test_signature_of_wrapped_visible():
    def sig_target(a, b=2, *, c):
        return a

    decorated = cachu.cache(ttl=300)(sig_target)
    assert inspect.signature(decorated) == inspect.signature(sig_target)


# --- package override ------------------------------------------------------------


def test_package_override_uses_that_packages_config(region_keys):
    cachu.configure(key_prefix="mine:")

    @cachu.cache(ttl=300, package="otherlib")
    def cross_pkg(x):
        return x

    @cachu.cache(ttl=300)
    def own_pkg(x):
        return x

    cross_pkg(1)
    own_pkg(1)
    # otherlib never called configure(): it uses the defaults (no prefix)
    assert region_keys(300) == ["5m:mine:own_pkg|x=1"]
    assert region_keys(300, package="otherlib") == ["5m:cross_pkg|x=1"]
    cachu.configure(key_prefix="theirs:")  # still this package's config
    cross_pkg(2)
    assert region_keys(300, package="otherlib") == ["5m:cross_pkg|x=1", "5m:cross_pkg|x=2"]


# --- the two call protocols ------------------------------------------------------
# CPython calls a decorated function through vectorcall (the arguments as they
# lie on its stack) and, from some callers, through tp_call (a tuple and a
# dict). Both must behave the same.


def test_vectorcall_is_enabled():
    @cachu.cache(ttl=300)
    def f(x):
        return x

    have_vectorcall = 1 << 11  # Py_TPFLAGS_HAVE_VECTORCALL
    assert type(f).__flags__ & have_vectorcall


def test_both_call_protocols_share_entries_and_counts(region_keys):
    calls = []

    @cachu.cache(ttl=300)
    def f(x, y=2, *rest, z=0):
        calls.append((x, y, rest, z))
        return [x, y, list(rest), z]

    tp_call = type(f).__call__  # the slot wrapper: always the tuple protocol
    assert f(1) == [1, 2, [], 0]  # vectorcall, positional
    assert tp_call(f, 1) == [1, 2, [], 0]  # tp_call: a hit on the same key
    assert tp_call(f, 1, y=3, z=4) == [1, 3, [], 4]  # tp_call with keywords
    assert f(1, y=3, z=4) == [1, 3, [], 4]  # vectorcall with keywords: a hit
    assert f(1, 2, 5, 6) == [1, 2, [5, 6], 0]
    assert tp_call(f, 1, 2, 5, 6) == [1, 2, [5, 6], 0]
    assert f(*[7], **{"z": 1}) == tp_call(f, 7, z=1) == [7, 2, [], 1]
    assert len(calls) == 4
    info = cachu.cache_info(f)
    assert (info.hits, info.misses) == (4, 4)
    assert f(1, _skip_cache=True) == tp_call(f, 1, _skip_cache=True)
    assert len(calls) == 6


def test_errors_pass_through_both_call_protocols():
    @cachu.cache(ttl=300)
    def f(x):
        raise KeyError(x)

    with pytest.raises(KeyError):
        f(1)
    with pytest.raises(KeyError):
        type(f).__call__(f, 1)
    with pytest.raises(TypeError):
        f()  # a missing argument is the function's own TypeError
    with pytest.raises(TypeError):
        f(1, 2, 3)


def test_bound_method_calls_take_the_fast_path_with_self():
    class Repo:
        def __init__(self, tag):
            self.tag = tag

        @cachu.cache(ttl=300)
        def get(self, x):
            return (self.tag, x)

    a, b = Repo("a"), Repo("b")
    assert a.get(1) == ("a", 1)
    assert b.get(1) == ("a", 1)  # self is not part of the key
    assert a.get(x=2) == ("a", 2)


# --- pickling and copying: by reference, as for a plain function ---------------


@cachu.cache(ttl=300)
def module_level_square(x):
    return x * x


class Holder:
    @cachu.cache(ttl=300)
    def method(self, x):
        return x + 1


def test_decorated_function_pickles_by_reference():
    import pickle

    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(module_level_square, protocol)) is module_level_square
    assert pickle.loads(pickle.dumps(Holder.method)) is Holder.method
    assert pickle.loads(pickle.dumps(Holder().method))(1) == 2


def test_decorated_function_copies_as_itself():
    import copy

    assert copy.copy(module_level_square) is module_level_square
    assert copy.deepcopy({"callback": module_level_square})["callback"] is module_level_square


def test_local_function_fails_to_pickle_like_a_local_function():
    import pickle

    @cachu.cache(ttl=300)
    def local(x):
        return x

    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(local)


def test_multiprocessing_pool_runs_a_decorated_function():
    import multiprocessing

    # spawn: the worker imports this module afresh and finds the function by name.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.map(module_level_square, range(5)) == [0, 1, 4, 9, 16]

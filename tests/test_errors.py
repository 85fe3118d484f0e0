"""Bad input gives a clear exception; user exceptions propagate unchanged."""

import os
import threading

import cachu
import pytest
from cachu.backends import NO_VALUE


class Boom(Exception):
    pass


# --- unknown backend names ---------------------------------------------------------


def test_configure_unknown_backend():
    with pytest.raises(ValueError, match="bogus"):
        cachu.configure(backend="bogus")


def test_failed_configure_changes_nothing():
    backend = cachu.configure(key_prefix="keep:").backend
    with pytest.raises(ValueError):
        cachu.configure(backend="bogus", key_prefix="lost:")
    assert cachu.get_config().key_prefix == "keep:"
    assert cachu.get_config().backend == backend


def test_decorator_unknown_backend():
    # Raising at decoration is best; raising at the first call is acceptable.
    with pytest.raises(ValueError, match="bogus"):

        @cachu.cache(ttl=300, backend="bogus")
        def bad_backend(x):
            return x

        bad_backend(1)


def test_get_backend_unknown_backend():
    with pytest.raises(ValueError, match="nosuch"):
        cachu.get_backend("nosuch", ttl=300)


# --- ttl ------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", ["5", b"5", [5], object()], ids=["str", "bytes", "list", "object"])
def test_ttl_of_wrong_type_rejected_at_decoration(ttl):
    def target(x):
        return x

    with pytest.raises((TypeError, ValueError)):
        cachu.cache(ttl=ttl)(target)


@pytest.mark.parametrize("ttl", [0, -1, -300])
def test_zero_and_negative_ttl_are_legal(ttl):
    calls = []

    @cachu.cache(ttl=ttl)
    def legal_ttl(x):
        calls.append(x)
        return x

    assert legal_ttl(1) == 1
    assert legal_ttl(1) == 1
    assert calls == [1, 1]


# --- file_dir -------------------------------------------------------------------


def test_file_dir_missing(tmp_path):
    missing = tmp_path / "does" / "not" / "exist"
    with pytest.raises(ValueError):
        cachu.configure(file_dir=str(missing))
    assert cachu.get_config().file_dir != str(missing)


def test_file_dir_is_a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    with pytest.raises(ValueError):
        cachu.configure(file_dir=str(path))


def _unwritable_dir(tmp_path):
    """A directory this user cannot create files in: a 0o555 one, or, for
    root (whom modes do not stop), a procfs directory nobody may write."""
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if not os.access(ro, os.W_OK):
        return str(ro)
    for candidate in ("/proc/1", "/proc/self/fdinfo"):
        if os.path.isdir(candidate) and not os.access(candidate, os.W_OK):
            return candidate
    pytest.skip("no directory this user cannot write to")


def test_file_dir_not_writable(tmp_path):
    path = _unwritable_dir(tmp_path)
    cachu.configure(file_dir=str(tmp_path))
    with pytest.raises(ValueError, match="not writable"):
        cachu.configure(file_dir=path)
    # The bad value was refused whole: the previous directory stays.
    assert cachu.get_config().file_dir == str(tmp_path)


def test_file_dir_valid(tmp_path):
    assert cachu.configure(file_dir=str(tmp_path)).file_dir == str(tmp_path)


# --- values that cannot be pickled ----------------------------------------------------


@pytest.mark.parametrize(
    "make_value",
    [lambda: {"fn": lambda: 1}, lambda: {"lock": threading.Lock()}, lambda: [threading.Lock()]],
    ids=["lambda", "lock", "lock-in-list"],
)
def test_unpicklable_result_raises_at_call(region_keys, make_value):
    calls = []

    @cachu.cache(ttl=300)
    def unpicklable(x):
        calls.append(x)
        return make_value() if x == "bad" else {"x": x}

    assert unpicklable("good") == {"x": "good"}
    with pytest.raises(Exception) as excinfo:
        unpicklable("bad")
    assert str(excinfo.value)
    # nothing stored for the bad key, the good entry intact, the key lock released
    assert region_keys(300) == ["5m:unpicklable|x='good'"]
    assert unpicklable("good") == {"x": "good"}
    with pytest.raises(Exception) as again:
        unpicklable("bad")
    assert str(again.value)
    assert calls == ["good", "bad", "bad"]


def test_unpicklable_value_in_backend_set():
    mem = cachu.get_backend("memory", ttl=300)
    mem.set("ok", [1], 300)
    with pytest.raises(Exception) as excinfo:
        mem.set("bad", {"lock": threading.Lock()}, 300)
    assert str(excinfo.value)
    assert mem.get("bad") is NO_VALUE
    assert mem.get("ok") == [1]
    assert mem.count() == 1


def test_unpicklable_value_in_helpers():
    @cachu.cache(ttl=300)
    def helper_target(x):
        return x

    helper_target(1)
    with pytest.raises(Exception) as via_helper:
        helper_target.set(lambda: 0, x=2)
    assert str(via_helper.value)
    with pytest.raises(Exception) as via_cache_set:
        cachu.cache_set(helper_target, {"l": threading.Lock()}, x=3)
    assert str(via_cache_set.value)
    assert helper_target.get(x=1) == 1
    assert helper_target.get(default=None, x=2) is None
    assert helper_target.get(default=None, x=3) is None


def test_unpicklable_rejected_by_cache_if_is_fine():
    lock = threading.Lock()

    @cachu.cache(ttl=300, cache_if=lambda r: not isinstance(r, dict))
    def rejected(x):
        return {"lock": lock}

    assert rejected(1) == {"lock": lock}
    assert rejected(1)["lock"] is lock


# --- user exceptions propagate unchanged -----------------------------------------------


def test_function_exception_propagates(region_keys):
    err = Boom("from function")
    calls = []

    @cachu.cache(ttl=300)
    def raises(x):
        calls.append(x)
        raise err

    for _ in range(2):
        with pytest.raises(Boom) as excinfo:
            raises(1)
        assert excinfo.value is err
    assert calls == [1, 1]
    assert region_keys(300) == []
    assert cachu.cache_get(raises, x=1, default="none") == "none"


def test_cache_if_exception_propagates(region_keys):
    err = Boom("from cache_if")

    def bad_cache_if(result):
        raise err

    @cachu.cache(ttl=300, cache_if=bad_cache_if)
    def guarded(x):
        return x

    with pytest.raises(Boom) as excinfo:
        guarded(1)
    assert excinfo.value is err
    assert region_keys(300) == []


def test_callable_ttl_exception_propagates(region_keys):
    err = Boom("from ttl")

    def bad_ttl(result):
        raise err

    @cachu.cache(ttl=bad_ttl)
    def dyn_bad(x):
        return x

    with pytest.raises(Boom) as excinfo:
        dyn_bad(1)
    assert excinfo.value is err
    assert region_keys(-1) == []


def test_validate_exception_propagates():
    err = Boom("from validate")
    calls = []

    def bad_validate(entry):
        raise err

    @cachu.cache(ttl=300, validate=bad_validate)
    def checked(x):
        calls.append(x)
        return [x]

    assert checked(1) == [1]  # a miss: validate is not consulted
    with pytest.raises(Boom) as excinfo:
        checked(1)
    assert excinfo.value is err
    assert calls == [1]
    assert checked.get(x=1) == [1]


def test_exception_keeps_existing_entry():
    state = {"fail": False}

    @cachu.cache(ttl=300)
    def sometimes(x):
        if state["fail"]:
            raise Boom(x)
        return x

    sometimes(1)
    state["fail"] = True
    with pytest.raises(Boom):
        sometimes(1, _overwrite_cache=True)
    with pytest.raises(Boom):
        sometimes(2)
    assert sometimes(1) == 1
    assert sometimes.get(default="none", x=2) == "none"


def test_base_exception_propagates():
    @cachu.cache(ttl=300)
    def interrupts(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupts(1)
    assert interrupts.get(default="none", x=1) == "none"

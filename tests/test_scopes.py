"""Scoped switches: disable/enable/is_disabled(package=, tag=) and
get_disabled_scopes(), sync and async, on memory, file and Redis."""

import asyncio

import backend_kinds
import cachu
import pytest

# The fixtures kind and use_backend, shared by the modules of these features.
kind = backend_kinds.kind
use_backend = backend_kinds.use_backend


def counted(package, tag="", is_async=False):
    """A decorated function of ``package`` (with ``tag``) and the list of
    the calls that ran it."""
    calls = []
    if is_async:

        @cachu.cache(ttl=300, tag=tag, package=package)
        async def fn(x):
            await asyncio.sleep(0)
            calls.append(x)
            return {"x": x}

    else:

        @cachu.cache(ttl=300, tag=tag, package=package)
        def fn(x):
            calls.append(x)
            return {"x": x}

    return fn, calls


def call_twice(fn, is_async):
    """Call ``fn(1)`` twice (awaited for a coroutine function)."""
    if is_async:

        async def both():
            return [await fn(1), await fn(1)]

        return asyncio.run(both())
    return [fn(1), fn(1)]


def runs(package, tag, is_async):
    """How many times ``fn(1)`` ran over two calls of a fresh function."""
    fn, calls = counted(package, tag, is_async)
    assert call_twice(fn, is_async) == [{"x": 1}, {"x": 1}]
    return len(calls)


@pytest.fixture(params=[False, True], ids=["sync", "async"])
def is_async(request):
    return request.param


@pytest.fixture
def packages(use_backend):
    # Packages share one Redis database: their prefixes keep them apart.
    for package in ("pkg_a", "pkg_b"):
        use_backend(package, key_prefix=f"{package}:")


def test_no_argument_is_process_wide_as_in_0_2_7(packages, is_async):
    cachu.disable()
    assert cachu.is_disabled() is True
    assert runs("pkg_a", "", is_async) == 2
    assert runs("pkg_b", "users", is_async) == 2
    cachu.enable()
    assert cachu.is_disabled() is False
    assert runs("pkg_a", "", is_async) == 1


def test_package_scope(packages, is_async):
    cachu.disable(package="pkg_a")
    assert runs("pkg_a", "", is_async) == 2
    assert runs("pkg_a", "users", is_async) == 2
    assert runs("pkg_b", "", is_async) == 1
    # The process-wide switch stays on: only the scope is off.
    assert cachu.is_disabled() is False
    assert cachu.is_disabled(package="pkg_a") is True
    assert cachu.is_disabled(package="pkg_b") is False
    cachu.enable(package="pkg_a")
    assert runs("pkg_a", "", is_async) == 1


def test_tag_scope(packages, is_async):
    cachu.disable(tag="users")
    assert runs("pkg_a", "users", is_async) == 2
    assert runs("pkg_b", "users", is_async) == 2
    assert runs("pkg_a", "", is_async) == 1
    assert runs("pkg_a", "products", is_async) == 1
    cachu.enable(tag="users")
    assert runs("pkg_a", "users", is_async) == 1


def test_scopes_combine_with_or(packages, is_async):
    cachu.disable(package="pkg_a")
    cachu.disable(tag="users")
    assert runs("pkg_a", "", is_async) == 2  # its package is off
    assert runs("pkg_b", "users", is_async) == 2  # its tag is off
    assert runs("pkg_b", "", is_async) == 1  # neither
    cachu.enable(package="pkg_a")
    assert runs("pkg_a", "", is_async) == 1
    assert runs("pkg_a", "users", is_async) == 2  # the tag scope remains


def test_both_arguments_switch_off_two_scopes(packages):
    cachu.disable(package="pkg_a", tag="users")
    scopes = cachu.get_disabled_scopes()
    assert scopes == cachu.DisabledScopes(
        globally=False, packages=frozenset({"pkg_a"}), tags=frozenset({"users"})
    )
    assert runs("pkg_b", "users", False) == 2
    assert runs("pkg_a", "", False) == 2
    cachu.enable(package="pkg_a", tag="users")
    assert cachu.get_disabled_scopes().packages == frozenset()
    assert runs("pkg_b", "users", False) == 1


def test_disabled_calls_store_nothing(use_backend, kind, is_async):
    use_backend("pkg_a")
    cachu.disable(package="pkg_a")
    fn, _ = counted("pkg_a", "", is_async)
    call_twice(fn, is_async)
    cachu.enable()
    assert cachu.get_backend(kind, "pkg_a", ttl=300).count() == 0


def test_tag_is_named_as_clearing_names_it(packages):
    # 'users' and '|users|' are one tag in keys; they are one scope too.
    cachu.disable(tag="|users|")
    assert cachu.is_disabled(tag="users") is True
    assert runs("pkg_a", "users", False) == 2
    assert cachu.get_disabled_scopes().tags == frozenset({"users"})
    cachu.enable(tag="users")
    assert cachu.get_disabled_scopes().tags == frozenset()


def test_scoped_enable_does_not_lift_the_process_wide_switch(packages):
    cachu.disable()
    cachu.enable(package="pkg_a")
    assert cachu.is_disabled(package="pkg_a") is True
    assert runs("pkg_a", "", False) == 2


def test_enable_without_argument_clears_every_scope(packages):
    cachu.disable(package="pkg_a")
    cachu.disable(tag="users")
    cachu.disable()
    cachu.enable()
    assert cachu.get_disabled_scopes() == cachu.DisabledScopes(
        globally=False, packages=frozenset(), tags=frozenset()
    )
    assert runs("pkg_a", "users", False) == 1


def test_is_disabled_without_argument_reports_the_process_wide_switch_only(packages):
    cachu.disable(package="pkg_a")
    assert cachu.is_disabled() is False
    assert cachu.is_disabled(package="pkg_a", tag="other") is True
    assert cachu.is_disabled(package="pkg_b", tag="other") is False


def test_the_callers_package_is_the_scope_of_undeclared_functions(packages, pkg):
    # A function decorated here without package= belongs to this module's
    # package, which is the scope that switches it off.
    calls = []

    @cachu.cache(ttl=300)
    def here(x):
        calls.append(x)
        return x

    cachu.disable(package=pkg)
    here(1)
    here(1)
    assert len(calls) == 2
    cachu.enable(package=pkg)
    here(1)
    here(1)
    assert len(calls) == 3


def test_snapshot_cannot_change_the_state(packages):
    cachu.disable(package="pkg_a")
    scopes = cachu.get_disabled_scopes()
    with pytest.raises(AttributeError):
        scopes.packages.add("pkg_b")  # frozenset
    with pytest.raises(AttributeError):
        scopes.globally = True  # frozen dataclass
    assert cachu.is_disabled(package="pkg_b") is False


@pytest.mark.parametrize("bad", [{"package": ""}, {"tag": ""}, {"tag": "||"}, {"tag": 3}])
def test_empty_scope_names_are_refused(bad):
    for fn in (cachu.disable, cachu.enable, cachu.is_disabled):
        with pytest.raises(cachu.ConfigurationError, match=next(iter(bad))):
            fn(**bad)
    assert cachu.get_disabled_scopes().tags == frozenset()


def test_skip_and_overwrite_still_work_under_a_scope(packages):
    calls = []

    @cachu.cache(ttl=300, package="pkg_b")
    def fn(x):
        calls.append(x)
        return x

    cachu.disable(package="pkg_a")
    fn(1)
    fn(1, _skip_cache=True)
    fn(1, _overwrite_cache=True)
    fn(1)
    assert len(calls) == 3

"""The pytest plugin (entry point ``pytest11``): cachu_disabled and
cachu_isolated, run in real pytest subprocesses through ``pytester``,
including two pytest-xdist workers sharing one real redis-server."""

import textwrap

import pytest

pytest_plugins = ["pytester"]


def run(pytester, source, *args):
    """Write ``source`` as a test module and run pytest on it in a
    subprocess (plugins load from entry points, as for a user)."""
    pytester.makepyfile(test_inner=textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args, timeout=110)


def test_fixtures_come_from_the_entry_point(pytester):
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider", timeout=110)
    result.stdout.fnmatch_lines(["cachu_disabled -- *pytest_plugin.py*", "cachu_isolated -- *"])


def test_nothing_changes_without_a_fixture(pytester):
    result = run(
        pytester,
        """
        import cachu

        calls = []

        @cachu.cache(ttl=300)
        def f(x):
            calls.append(x)
            return x

        def test_plain():
            f(1)
            f(1)
            assert calls == [1]
            assert cachu.get_config().key_prefix == ""
            assert cachu.get_disabled_scopes().globally is False
        """,
    )
    result.assert_outcomes(passed=1)


def test_cachu_disabled(pytester):
    result = run(
        pytester,
        """
        import asyncio

        import cachu

        calls = []

        @cachu.cache(ttl=300, tag="users")
        def f(x):
            calls.append(x)
            return x

        @cachu.cache(ttl=300)
        async def g(x):
            calls.append(("g", x))
            return x

        cachu.disable(tag="slow")  # a scope set before: kept

        def test_1_disabled(cachu_disabled):
            f(1)
            f(1)
            asyncio.run(g(1))
            asyncio.run(g(1))
            assert len(calls) == 4
            assert cachu.is_disabled() is True

        def test_2_back_on():
            del calls[:]
            f(1)
            f(1)
            assert calls == [1]
            assert cachu.get_disabled_scopes() == cachu.DisabledScopes(
                globally=False, packages=frozenset(), tags=frozenset({"slow"})
            )
        """,
    )
    result.assert_outcomes(passed=2)


def test_cachu_isolated(pytester, server):
    pytester.syspathinsert()
    shared = pytester.mkdir("shared_cache")
    result = run(
        pytester,
        f"""
        import os

        import cachu
        import redis

        SHARED = {str(shared)!r}
        URL = {server.url!r}
        cachu.configure(key_prefix="app:", file_dir=SHARED, redis_url=URL)

        calls = []

        def record(kind, x):
            calls.append((kind, x))
            return x

        @cachu.cache(ttl=300)
        def in_memory(x):
            return record("memory", x)

        @cachu.cache(ttl=300, backend="file")
        def in_file(x):
            return record("file", x)

        @cachu.cache(ttl=300, backend="redis")
        def in_redis(x):
            return record("redis", x)

        # Entries made before any test: the isolated tests must not see them,
        # the later ones must find them again.
        in_memory(0)
        in_file(0)
        in_redis(0)
        BEFORE = list(calls)

        def test_1_isolated(cachu_isolated):
            cfg = cachu.get_config()
            assert cfg.key_prefix == cachu_isolated.key_prefix + "app:"
            assert cachu_isolated.key_prefix.startswith("cachu-test-")
            assert cfg.file_dir == cachu_isolated.file_dir != SHARED
            for fn in (in_memory, in_file, in_redis):
                fn(0)
                fn(0)
            assert calls[len(BEFORE):] == [("memory", 0), ("file", 0), ("redis", 0)]
            assert os.listdir(cachu_isolated.file_dir)  # the file region is there
            # configure() inside the test keeps the isolation.
            cachu.configure(key_prefix="v2:")
            assert cachu.get_config().key_prefix == cachu_isolated.key_prefix + "v2:"

        def test_2_isolated_again(cachu_isolated):
            del calls[len(BEFORE):]
            in_memory(0)
            in_redis(0)
            assert calls[len(BEFORE):] == [("memory", 0), ("redis", 0)]

        def test_3_restored():
            del calls[len(BEFORE):]
            cfg = cachu.get_config()
            assert (cfg.key_prefix, cfg.file_dir) == ("app:", SHARED)
            for fn in (in_memory, in_file, in_redis):
                fn(0)
            assert calls[len(BEFORE):] == []  # the entries from before the tests
            # The isolated tests' Redis entries are gone.
            raw = redis.Redis.from_url(URL)
            assert [k for k in raw.keys() if b"cachu-test-" in k] == []
        """,
    )
    result.assert_outcomes(passed=3)


XDIST_TEST = """
import os
import pathlib
import time

import cachu
import pytest
import redis

URL = os.environ["CACHU_PLUGIN_REDIS_URL"]
MEETING = pathlib.Path(os.environ["CACHU_PLUGIN_MEETING"])


@pytest.fixture
def not_isolated():
    yield


def meet(step):
    # Wait until both workers reached `step` (a hang guard, no timing).
    (MEETING / f"{step}-{os.environ['PYTEST_XDIST_WORKER']}").touch()
    for _ in range(6000):
        if len(list(MEETING.glob(f"{step}-*"))) == 2:
            return
        time.sleep(0.01)
    raise AssertionError(f"the other worker never reached {step}")


@pytest.mark.parametrize("isolation", [os.environ["CACHU_PLUGIN_FIXTURE"]])
def test_shared_redis(isolation, request):
    request.getfixturevalue(isolation)
    worker = os.environ["PYTEST_XDIST_WORKER"]
    cachu.configure(backend="redis", redis_url=URL)

    @cachu.cache(ttl=300)
    def whoami(x):
        return worker

    meet("start")
    first = whoami(1)
    meet("stored")  # both workers have stored (or read) their entry
    again = whoami(1)
    keys = redis.Redis.from_url(URL).keys("*whoami*")
    meet("counted")  # before either removes its entries
    assert (first, again) == (worker, worker)
    assert len(keys) == 2
"""


@pytest.mark.parametrize(
    ("fixture", "outcome"),
    [("cachu_isolated", {"passed": 2}), ("not_isolated", {"failed": 2})],
    ids=["isolated", "control-without-isolation"],
)
def test_two_xdist_workers_share_one_redis(pytester, server, monkeypatch, fixture, outcome):
    # `--dist each`: the test runs on both workers at once; they meet between
    # steps, so each writes while the other's entry exists. The control run,
    # without the fixture, shows that the test can fail.
    server.client().flushall()
    meeting = pytester.mkdir("meeting")
    monkeypatch.setenv("CACHU_PLUGIN_REDIS_URL", server.url)
    monkeypatch.setenv("CACHU_PLUGIN_MEETING", str(meeting))
    monkeypatch.setenv("CACHU_PLUGIN_FIXTURE", fixture)
    result = run(pytester, XDIST_TEST, "-n", "2", "--dist", "each", "-p", "xdist")
    result.assert_outcomes(**outcome)
    if fixture == "cachu_isolated":
        assert server.client().keys("*") == []  # each worker removed its entries

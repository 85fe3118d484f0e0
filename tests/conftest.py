"""Shared fixtures for the cachu pytest suite.

Every test starts and ends with a clean cachu: no package configs, no backend
instances or entries, no statistics, caching enabled.
"""

import importlib
import os
import sys
import textwrap

import pytest

# The Redis Cluster and Sentinel fixtures.
pytest_plugins = ["topology_fixtures"]


def _reset_cachu():
    """Put cachu back into its just-imported state.

    Uses ``cachu._testing.reset()`` when the package provides it. The pure
    Python reference package (0.2.7) does not, so the suite can also be run
    against it for comparison: then the equivalent internals are reset.
    """
    try:
        from cachu._testing import reset
    except ImportError:
        reset = None
    if reset is not None:
        reset()
        return

    import cachu

    cfg_mod = getattr(cachu, "config", None)
    dec_mod = getattr(cachu, "decorator", None)
    registry = getattr(cfg_mod, "_registry", None)
    manager = getattr(dec_mod, "manager", None)
    if registry is None or manager is None:
        raise RuntimeError("cachu._testing.reset() is missing and no fallback is known")
    registry.clear()
    manager.clear()
    manager.stats.clear()
    cachu.enable()


@pytest.fixture(autouse=True)
def clean_cachu():
    _reset_cachu()
    yield
    _reset_cachu()


@pytest.fixture
def ctrl_c():
    """Python's own Ctrl-C handler for the test, whatever the runner set:
    a suite started in the background of a shell without job control
    inherits SIGINT ignored, and then ``_thread.interrupt_main()`` does
    nothing."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture
def pkg(request):
    """The cachu package name of the requesting test module.

    With pytest's default import mode, ``tests/test_x.py`` is the module
    ``test_x``, so its package is ``test_x``.
    """
    return request.module.__name__.split(".")[0]


@pytest.fixture
def region_keys(pkg):
    """Return a function listing the keys stored in one backend region.

    ``region_keys(300)`` lists the keys of the memory backend of the test
    module's package for ttl 300, sorted.
    """
    import cachu

    def _keys(ttl, backend="memory", package=None):
        inst = cachu.get_backend(backend, package or pkg, ttl=ttl)
        return sorted(inst.keys())

    return _keys


@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """Write a throw-away importable package to disk and import it.

    ``make_package('libfoo', {'__init__.py': src, 'sub/mod.py': src2})``
    writes the files, puts their folder on ``sys.path`` and returns the
    imported top-level module. Submodules can be imported with
    ``importlib.import_module``. Everything is removed from ``sys.modules``
    afterwards. Names must not start with ``cachu``: such modules count as
    part of cachu when the caller's package is looked up.
    """
    root = tmp_path / "pkgs"
    root.mkdir(exist_ok=True)
    monkeypatch.syspath_prepend(str(root))
    created = []

    def _make(name, files):
        for rel, src in files.items():
            path = root / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(src))
            folder = path.parent
            while folder != root:
                init = folder / "__init__.py"
                if not init.exists():
                    init.write_text("")
                folder = folder.parent
        created.append(name)
        importlib.invalidate_caches()
        return importlib.import_module(name)

    yield _make

    for name in created:
        for mod in list(sys.modules):
            if mod == name or mod.startswith(name + "."):
                del sys.modules[mod]


@pytest.fixture
def clean_env():
    """A copy of the environment without any CACHU_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CACHU_")}


# -- a real redis-server, for the modules that use Redis --------------------------


@pytest.fixture(scope="module")
def server():
    """A redis-server for the requesting module (127.0.0.1, a free port,
    nothing persisted)."""
    from redis_server import start_server

    s = start_server()
    yield s
    s.close()


@pytest.fixture
def r(server):
    """The raw peer client on the module server, database 0, flushed."""
    c = server.client()
    c.flushall()
    yield c
    c.close()


@pytest.fixture
def own_server():
    """Start extra servers for one test: ``own_server(**RedisServer kwargs)``."""
    from cachu.decorator import clear_backends
    from redis_server import start_server

    started = []

    def make(**kwargs):
        s = start_server(**kwargs)
        started.append(s)
        return s

    yield make
    clear_backends()
    for s in started:
        s.close()

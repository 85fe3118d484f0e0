"""Configuration, package isolation, disable/enable and environment defaults."""

import importlib
import json
import os
import subprocess
import sys
import textwrap

import cachu
import pytest

PKG = __name__.split(".")[0]

DEFAULTS = {
    "backend": "memory",
    "key_prefix": "",
    "file_dir": "/tmp",
    "redis_url": "redis://localhost:6379/0",
    "lock_timeout": 10.0,
    # Added by the Redis work (issue 4): outage behaviour and socket bound.
    "fail_open": True,
    "redis_socket_timeout": 3.0,
    # Beyond 0.2.7 (spec/EXTENSIONS.md): defaults that change nothing.
    "memory_maxsize": None,
    "memory_max_bytes": None,
    "memory_sweep_interval": 60.0,
    "on_lock_timeout": "run",
    "cache_deadline": None,
    "redis_retry_count": 1,
    "redis_health_check_interval": 30.0,
    "redis_near_cache": 0,
    "signing_key": None,
}

no_env_overrides = pytest.mark.skipif(
    any(k.startswith("CACHU_") for k in os.environ),
    reason="CACHU_* variables in the environment change the defaults",
)


def as_dict(cfg):
    return {name: getattr(cfg, name) for name in DEFAULTS}


# --- public names ---------------------------------------------------------------


def test_public_names():
    for name in (
        "configure",
        "get_config",
        "get_all_configs",
        "disable",
        "enable",
        "is_disabled",
        "cache",
        "cache_get",
        "cache_set",
        "cache_delete",
        "cache_clear",
        "cache_info",
        "get_backend",
        "Backend",
    ):
        assert hasattr(cachu, name), name


def test_module_paths():
    backends = importlib.import_module("cachu.backends")
    types_ = importlib.import_module("cachu.types")
    config = importlib.import_module("cachu.config")
    decorator = importlib.import_module("cachu.decorator")
    operations = importlib.import_module("cachu.operations")
    assert backends.Backend is cachu.Backend
    assert backends.NO_VALUE is not None
    assert types_.CacheEntry and types_.CacheInfo
    for name in (
        "configure",
        "get_config",
        "get_all_configs",
        "disable",
        "enable",
        "is_disabled",
        "CacheConfig",
    ):
        assert hasattr(config, name), name
    for name in ("cache", "get_backend"):
        assert hasattr(decorator, name), name
    for name in ("cache_get", "cache_set", "cache_delete", "cache_clear", "cache_info"):
        assert hasattr(operations, name), name


# --- configure / get_config ------------------------------------------------------


@no_env_overrides
def test_defaults():
    assert as_dict(cachu.get_config()) == DEFAULTS
    assert as_dict(cachu.get_config(package="never_configured")) == DEFAULTS


def test_configure_returns_config():
    cfg = cachu.configure(backend="null", key_prefix="v1:", lock_timeout=2.5)
    assert cfg.backend == "null"
    assert cfg.key_prefix == "v1:"
    assert cfg.lock_timeout == 2.5
    assert as_dict(cachu.get_config()) == as_dict(cfg)
    assert isinstance(cfg, cachu.config.CacheConfig)


def test_configure_changes_only_passed_options(tmp_path):
    base = as_dict(cachu.get_config())
    cachu.configure(key_prefix="a:")
    cachu.configure(backend="null")
    cachu.configure(redis_url="redis://cache-host:6380/2")
    cachu.configure(file_dir=str(tmp_path))
    cachu.configure(lock_timeout=3.0)
    cfg = cachu.configure()
    expected = dict(
        base,
        key_prefix="a:",
        backend="null",
        redis_url="redis://cache-host:6380/2",
        file_dir=str(tmp_path),
        lock_timeout=3.0,
    )
    assert as_dict(cfg) == expected
    cachu.configure(backend=None, key_prefix=None, file_dir=None, redis_url=None, lock_timeout=None)
    assert as_dict(cachu.get_config()) == expected


def test_configure_empty_prefix_is_a_value():
    cachu.configure(key_prefix="a:")
    cachu.configure(key_prefix="")
    assert cachu.get_config().key_prefix == ""


def test_configure_file_dir_accepts_path(tmp_path):
    cfg = cachu.configure(file_dir=tmp_path)
    assert cfg.file_dir == str(tmp_path)


@pytest.mark.parametrize("backend", ["memory", "null", "file", "redis"])
def test_configure_accepts_every_backend_name(backend):
    assert cachu.configure(backend=backend).backend == backend


def test_get_config_for_package():
    cachu.configure(key_prefix="mine:")
    assert cachu.get_config(package=PKG).key_prefix == "mine:"
    assert cachu.get_config(package="someone_else").key_prefix == ""


def test_get_all_configs():
    all_before = cachu.get_all_configs()
    assert isinstance(all_before, dict)
    assert set(all_before["_default"]) == set(DEFAULTS)
    assert PKG not in all_before

    cachu.configure(key_prefix="x:")
    all_after = cachu.get_all_configs()
    assert all_after["_default"] == all_before["_default"]
    assert isinstance(all_after[PKG], dict)
    assert all_after[PKG] == dict(all_before["_default"], key_prefix="x:")


@no_env_overrides
def test_get_all_configs_default_values():
    assert cachu.get_all_configs() == {"_default": DEFAULTS}


def test_caller_package_is_test_module():
    """A test module tests/test_x.py imported by pytest is the package test_x."""
    cachu.configure(key_prefix="me:")
    assert PKG in cachu.get_all_configs()
    if __name__ == "test_config":
        assert PKG == "test_config"


# --- package isolation -----------------------------------------------------------


LIB_SRC = """
import cachu

cachu.configure(key_prefix='{prefix}')

calls = []


@cachu.cache(ttl=300)
def lookup(x):
    calls.append(x)
    return {{'lib': '{prefix}', 'x': x}}


def config():
    return cachu.get_config()


def clear(**kwargs):
    return cachu.cache_clear(**kwargs)


def backend_keys(ttl=300):
    return sorted(cachu.get_backend('memory', ttl=ttl).keys())
"""


def test_packages_are_isolated(make_package, region_keys):
    lib_a = make_package("isolib_a", {"__init__.py": LIB_SRC.format(prefix="lib_a:")})
    lib_b = make_package("isolib_b", {"__init__.py": LIB_SRC.format(prefix="lib_b:")})

    assert lib_a.config().key_prefix == "lib_a:"
    assert lib_b.config().key_prefix == "lib_b:"
    assert cachu.get_config().key_prefix == ""
    assert cachu.get_config(package="isolib_a").key_prefix == "lib_a:"

    lib_a.lookup(1)
    lib_b.lookup(1)
    assert lib_a.backend_keys() == ["5m:lib_a:lookup|x=1"]
    assert lib_b.backend_keys() == ["5m:lib_b:lookup|x=1"]
    assert region_keys(300) == []

    assert lib_a.lookup(1) == {"lib": "lib_a:", "x": 1}
    assert lib_b.lookup(1) == {"lib": "lib_b:", "x": 1}
    assert lib_a.calls == [1]
    assert lib_b.calls == [1]

    configs = cachu.get_all_configs()
    assert configs["isolib_a"]["key_prefix"] == "lib_a:"
    assert configs["isolib_b"]["key_prefix"] == "lib_b:"


def test_clear_from_library_is_scoped(make_package):
    lib_a = make_package("clrlib_a", {"__init__.py": LIB_SRC.format(prefix="a:")})
    lib_b = make_package("clrlib_b", {"__init__.py": LIB_SRC.format(prefix="b:")})
    lib_a.lookup(1)
    lib_b.lookup(1)
    assert lib_a.clear() == 1
    assert lib_a.backend_keys() == []
    assert lib_b.backend_keys() == ["5m:b:lookup|x=1"]
    assert cachu.cache_clear(package="clrlib_b") == 1
    assert lib_b.backend_keys() == []


def test_submodule_uses_top_level_package(make_package):
    make_package(
        "sublib",
        {
            "db/users.py": """
            import cachu

            cachu.configure(key_prefix='deep:')

            @cachu.cache(ttl=60)
            def get_user(user_id):
                return {'id': user_id}

            def where():
                return cachu.get_config().key_prefix
        """,
        },
    )
    users = importlib.import_module("sublib.db.users")
    assert cachu.get_config(package="sublib").key_prefix == "deep:"
    assert "sublib.db.users" not in cachu.get_all_configs()
    assert users.where() == "deep:"
    users.get_user(5)
    keys = sorted(cachu.get_backend("memory", "sublib", ttl=60).keys())
    assert keys == ["1m:deep:get_user|user_id=5"]


def test_package_override_on_decorator(make_package, region_keys):
    make_package("ovrlib", {"__init__.py": LIB_SRC.format(prefix="ovr:")})

    @cachu.cache(ttl=300, package="ovrlib")
    def borrowed(x):
        return x

    borrowed(3)
    assert region_keys(300) == []
    assert region_keys(300, package="ovrlib") == ["5m:ovr:borrowed|x=3"]


def test_decorator_in_unconfigured_package_uses_defaults(make_package):
    mod = make_package(
        "plainlib",
        {
            "__init__.py": """
        import cachu

        @cachu.cache(ttl=300)
        def plain(x):
            return x
    """
        },
    )
    cachu.configure(key_prefix="not-theirs:")
    mod.plain(1)
    keys = sorted(cachu.get_backend("memory", "plainlib", ttl=300).keys())
    assert keys == ["5m:plain|x=1"]


def test_script_run_as_main_gets_its_own_package(tmp_path, clean_env):
    script = tmp_path / "my_script.py"
    script.write_text(
        textwrap.dedent("""
        import json
        import cachu

        cachu.configure(key_prefix='s:')
        print(json.dumps(sorted(k for k in cachu.get_all_configs() if k != '_default')))
    """)
    )
    proc = subprocess.run(
        [sys.executable, str(script)],
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["__main__.my_script"]


# --- disable / enable ------------------------------------------------------------


def test_disable_enable_state():
    assert cachu.is_disabled() is False
    cachu.disable()
    assert cachu.is_disabled() is True
    cachu.disable()
    assert cachu.is_disabled() is True
    cachu.enable()
    assert cachu.is_disabled() is False
    cachu.enable()
    assert cachu.is_disabled() is False


def test_disable_is_global(make_package):
    lib = make_package("dislib", {"__init__.py": LIB_SRC.format(prefix="d:")})
    cachu.disable()
    lib.lookup(1)
    lib.lookup(1)
    assert lib.calls == [1, 1]
    assert lib.backend_keys() == []


# --- environment defaults (read at import, so each case runs a fresh interpreter) ---


ENV_PROBE = """
import json
import cachu

def dump(cfg):
    import dataclasses
    return dataclasses.asdict(cfg)

out = {'before': dump(cachu.get_config()),
       'default': cachu.get_all_configs()['_default']}

calls = []

@cachu.cache(ttl=300)
def env_default_backend(x):
    calls.append(x)
    return x

@cachu.cache(ttl=300, backend='memory')
def env_memory(x):
    return x

env_default_backend(1)
env_default_backend(1)
env_memory(1)
out['calls'] = len(calls)
out['keys'] = sorted(cachu.get_backend('memory', ttl=300).keys())
out['after'] = dump(cachu.configure(lock_timeout=3.0))
print(json.dumps(out))
"""


def run_python(code, env):
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_env_defaults(tmp_path, clean_env):
    env = dict(
        clean_env,
        CACHU_BACKEND="null",
        CACHU_KEY_PREFIX="env:",
        CACHU_FILE_DIR=str(tmp_path),
        CACHU_REDIS_URL="redis://env-host:6390/3",
    )
    proc = run_python(ENV_PROBE, env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = dict(
        DEFAULTS,
        backend="null",
        key_prefix="env:",
        file_dir=str(tmp_path),
        redis_url="redis://env-host:6390/3",
    )
    assert out["before"] == expected
    assert out["default"] == expected
    assert out["calls"] == 2  # null backend by default
    assert out["keys"] == ["5m:env:env_memory|x=1"]
    assert out["after"] == dict(expected, lock_timeout=3.0)


def test_no_env_gives_builtin_defaults(clean_env):
    proc = run_python(ENV_PROBE, clean_env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == DEFAULTS
    assert out["default"] == DEFAULTS
    assert out["calls"] == 1
    assert out["keys"] == ["5m:env_default_backend|x=1", "5m:env_memory|x=1"]


def test_single_env_variable(clean_env):
    proc = run_python(ENV_PROBE, dict(clean_env, CACHU_KEY_PREFIX="only:"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == dict(DEFAULTS, key_prefix="only:")


def test_bad_env_backend_fails_import(clean_env):
    proc = run_python("import cachu", dict(clean_env, CACHU_BACKEND="bogus"))
    assert proc.returncode != 0
    assert "CACHU_BACKEND" in proc.stderr


# --- options beyond 0.2.7 -------------------------------------------------------

EXTENSION_VALUES = {
    "memory_maxsize": 1000,
    "memory_max_bytes": 1 << 20,
    "memory_sweep_interval": 0.5,
    "on_lock_timeout": "raise",
    "cache_deadline": 0.25,
    "redis_retry_count": 3,
    "redis_health_check_interval": 5.0,
    "redis_near_cache": 100,
}


@pytest.mark.parametrize(("option", "value"), EXTENSION_VALUES.items())
def test_extension_option_set_and_kept(option, value):
    cfg = cachu.configure(**{option: value})
    assert getattr(cfg, option) == value
    cachu.configure(key_prefix="other:")  # not given: left as is
    assert getattr(cachu.get_config(), option) == value
    assert cachu.get_all_configs()[PKG][option] == value


@pytest.mark.parametrize("option", ["memory_maxsize", "memory_max_bytes", "cache_deadline"])
def test_extension_option_reset_to_none(option):
    cachu.configure(**{option: EXTENSION_VALUES[option]})
    assert getattr(cachu.configure(**{option: None}), option) is None


@pytest.mark.parametrize(
    ("option", "bad"),
    [
        ("memory_maxsize", 0),
        ("memory_maxsize", -1),
        ("memory_maxsize", True),
        ("memory_maxsize", 2.5),
        ("memory_max_bytes", "1k"),
        ("memory_max_bytes", False),
        ("memory_sweep_interval", -1),
        ("memory_sweep_interval", float("nan")),
        ("memory_sweep_interval", "60"),
        ("on_lock_timeout", "wait"),
        ("on_lock_timeout", None),
        ("cache_deadline", 0),
        ("cache_deadline", float("nan")),
        ("redis_retry_count", -1),
        ("redis_retry_count", 1.5),
        ("redis_health_check_interval", -2),
        ("redis_near_cache", True),
        ("signing_key", ""),
        ("signing_key", []),
        ("signing_key", ["good", b""]),
        ("signing_key", 12345),
    ],
)
def test_extension_option_refused(option, bad):
    before = cachu.get_all_configs().get(PKG)
    with pytest.raises(ValueError, match=option):
        cachu.configure(**{option: bad})
    assert cachu.get_all_configs().get(PKG) == before


def test_sweep_interval_accepts_zero_and_infinity():
    assert cachu.configure(memory_sweep_interval=0).memory_sweep_interval == 0
    assert cachu.configure(memory_sweep_interval=float("inf")).memory_sweep_interval == float("inf")


def test_signing_key_never_shown():
    secret = "s3cr3t-signing-key"
    cfg = cachu.configure(signing_key=[secret, b"older-key"])
    assert cfg.signing_key == (secret, b"older-key")
    assert secret not in repr(cfg) and secret not in str(cfg)
    assert cachu.get_all_configs()[PKG]["signing_key"] == "***"
    assert secret not in repr(cachu.get_all_configs())
    with pytest.raises(ValueError) as e:
        cachu.configure(signing_key=[secret, ""])
    assert secret not in str(e.value)


def test_extension_options_from_env(clean_env):
    env = dict(
        clean_env,
        CACHU_MEMORY_MAXSIZE="500",
        CACHU_MEMORY_SWEEP_INTERVAL="inf",
        CACHU_ON_LOCK_TIMEOUT="raise",
        CACHU_CACHE_DEADLINE="0.5",
        CACHU_REDIS_NEAR_CACHE="64",
        CACHU_SIGNING_KEY="env-secret",
    )
    proc = run_python(
        "import cachu, json; print(json.dumps(cachu.get_all_configs()['_default']))", env
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == dict(
        DEFAULTS,
        memory_maxsize=500,
        memory_sweep_interval=float("inf"),
        on_lock_timeout="raise",
        cache_deadline=0.5,
        redis_near_cache=64,
        signing_key="***",
    )


@pytest.mark.parametrize(
    ("var", "raw"),
    [
        ("CACHU_MEMORY_MAXSIZE", "-3"),
        ("CACHU_MEMORY_MAX_BYTES", "lots"),
        ("CACHU_ON_LOCK_TIMEOUT", "later"),
        ("CACHU_REDIS_RETRY_COUNT", "1.5"),
    ],
)
def test_bad_extension_env_fails_import(clean_env, var, raw):
    proc = run_python("import cachu", dict(clean_env, **{var: raw}))
    assert proc.returncode != 0
    assert var in proc.stderr

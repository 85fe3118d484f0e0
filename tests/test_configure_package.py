"""configure(..., package=...): one package's settings set from another's
code (an application configuring the libraries it uses), on memory, file and
Redis, sync and async."""

import asyncio
import os

import backend_kinds
import cachu
import pytest

# The fixtures kind and use_backend, shared by the modules of these features.
kind = backend_kinds.kind
use_backend = backend_kinds.use_backend


def test_other_package_only(pkg):
    cfg = cachu.configure(package="libx", key_prefix="libx:v2:", lock_timeout=3)
    assert cfg is cachu.get_config("libx")
    assert (cfg.key_prefix, cfg.lock_timeout) == ("libx:v2:", 3)
    # The caller's own package keeps the defaults.
    assert cachu.get_config().key_prefix == ""
    assert cachu.get_config(pkg).lock_timeout == 10.0
    assert set(cachu.get_all_configs()) >= {"_default", "libx"}


def test_options_not_given_stay(pkg):
    cachu.configure(package="libx", key_prefix="a:")
    cachu.configure(package="libx", lock_timeout=2)
    assert cachu.get_config("libx").key_prefix == "a:"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_functions_of_that_package_use_its_settings(use_backend, kind, is_async, tmp_path):
    use_backend("libx", key_prefix="libx:v2:")

    if is_async:

        @cachu.cache(ttl=300, package="libx")
        async def load(x):
            return x

        asyncio.run(load(1))
    else:

        @cachu.cache(ttl=300, package="libx")
        def load(x):
            return x

        load(1)
    keys = list(cachu.get_backend(kind, "libx", ttl=300).keys())
    assert keys == ["5m:libx:v2:load|x=1"]
    if kind == "file":  # the package's own database, named as 0.2.7 names it
        assert "libx_cache5min.db" in os.listdir(tmp_path)


def test_bad_value_names_the_option_and_changes_nothing():
    cachu.configure(package="libx", key_prefix="a:")
    with pytest.raises(cachu.ConfigurationError, match="lock_timeout"):
        cachu.configure(package="libx", key_prefix="b:", lock_timeout=-1)
    assert cachu.get_config("libx").key_prefix == "a:"

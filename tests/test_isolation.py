"""What cachu_isolated does, through the context manager behind it, for
sync and async functions on memory, file and Redis (the fixture itself, the
entry point and pytest-xdist are tested in test_pytest_plugin.py)."""

import asyncio

import backend_kinds
import cachu
import pytest
from cachu._isolation import disabled, isolated

# The fixtures kind and use_backend, shared by the modules of these features.
kind = backend_kinds.kind
use_backend = backend_kinds.use_backend


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_fresh_inside_and_restored_after(use_backend, kind, is_async, tmp_path):
    use_backend("isopkg", key_prefix="app:")
    runs = []

    if is_async:

        @cachu.cache(ttl=300, package="isopkg")
        async def load(x):
            runs.append(x)
            return x

        def call(x):
            return asyncio.run(load(x))

    else:

        @cachu.cache(ttl=300, package="isopkg")
        def load(x):
            runs.append(x)
            return x

        call = load

    call(1)
    inner_dir = tmp_path / "inner"
    inner_dir.mkdir()
    with isolated(str(inner_dir)) as isolation:
        call(1)  # not the entry made before: computed again
        call(1)
        assert runs == [1, 1]
        cfg = cachu.get_config("isopkg")
        assert cfg.key_prefix == isolation.key_prefix + "app:"
        assert cfg.file_dir == str(inner_dir)
        keys = sorted(cachu.get_backend(kind, "isopkg", ttl=300).keys())
        ours = f"5m:{isolation.key_prefix}app:load|x=1"
        # Memory and files are fresh; Redis is shared, and the prefix keeps apart.
        assert keys == (sorted([ours, "5m:app:load|x=1"]) if kind == "redis" else [ours])
    call(1)  # the entry from before is found again
    assert runs == [1, 1]
    assert cachu.get_config("isopkg").key_prefix == "app:"
    # Nothing of the isolated call is left in the backend.
    assert list(cachu.get_backend(kind, "isopkg", ttl=300).keys()) == ["5m:app:load|x=1"]


def test_disabled_restores_scopes():
    cachu.disable(package="libx")
    with disabled():
        assert cachu.is_disabled() is True
    assert cachu.get_disabled_scopes() == cachu.DisabledScopes(
        globally=False, packages=frozenset({"libx"}), tags=frozenset()
    )

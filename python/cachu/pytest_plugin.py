"""pytest fixtures for code that uses cachu (loaded through the ``pytest11``
entry point; nothing changes unless a test asks for a fixture).

- ``cachu_disabled``: caching is off during the test.
- ``cachu_isolated``: every package gets a fresh key prefix, a fresh
  temporary ``file_dir`` and empty memory regions during the test, so tests,
  including pytest-xdist workers sharing one Redis, never see each other's
  entries. Settings and entries are back as they were afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cachu._isolation import Isolation


@pytest.fixture
def cachu_disabled() -> Iterator[None]:
    """Caching off for the test: every decorated call runs its function."""
    from cachu._isolation import disabled

    with disabled():
        yield


@pytest.fixture
def cachu_isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolation]:
    """A cache of the test's own: fresh key prefix, file_dir and memory."""
    from cachu._isolation import isolated

    with isolated(str(tmp_path_factory.mktemp("cachu"))) as isolation:
        yield isolation

"""One fixture for the tests of features that must work alike on memory,
file and Redis: ``kind`` is the backend's name, and ``use_backend(package)``
configures a package to store there (a temporary directory, the module's
real redis-server)."""

import cachu
import pytest

KINDS = ["memory", "file", "redis"]


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def use_backend(kind, request, tmp_path):
    """``use_backend(package, **more)`` points ``package`` at this test's
    backend; for Redis, the module's server, flushed first."""
    url = server = None
    if kind == "redis":
        server = request.getfixturevalue("server")
        server.client().flushall()
        url = server.url

    def configure(package, **more):
        return cachu.configure(
            package=package,
            backend=kind,
            file_dir=str(tmp_path),
            redis_url=url,
            **more,
        )

    configure.server = server
    return configure

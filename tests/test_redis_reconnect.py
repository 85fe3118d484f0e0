"""``redis_retry_count`` and ``redis_health_check_interval`` on every Redis
form (one server, a cluster, a Sentinel master): connections the server
closed while they sat idle (``CLIENT KILL``, as managed Redis does after
minutes) cost a reconnect, never a failed call or a fail-open miss.

``fail_open`` is off in these tests, so a call that lost its connection
would raise instead of quietly computing.
"""

import asyncio
import time

import cachu
import pytest
from cachu.decorator import clear_backends

FORMS = ["single", "cluster", "sentinels"]


@pytest.fixture
def form(request):
    """(url, nodes whose clients get killed) for the parametrized form."""
    kind = request.param
    if kind == "single":
        server = request.getfixturevalue("server")
        server.client().flushall()
        return server.url, lambda: [server]
    topo = request.getfixturevalue(kind)
    if kind == "cluster":
        return topo.url, topo.running
    return topo.url, lambda: [topo.current_master()]


def kill_clients(nodes):
    """Close every client connection of every node (ours among them)."""
    for node in nodes():
        c = node.client()
        try:
            c.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        finally:
            c.close()


def counted(pkg):
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(x):
        runs.append(x)
        return x

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    async def g(x):
        runs.append(x)
        return x

    return f, g, runs


@pytest.mark.parametrize("form", FORMS, indirect=True)
def test_default_retry_reconnects_after_idle_connections_were_closed(form, pkg):
    url, nodes = form
    cachu.configure(redis_url=url, package=pkg, fail_open=False)
    f, g, runs = counted(pkg)
    try:
        assert f(1) == 1 and f(1) == 1
        assert asyncio.run(g(2)) == 2
        kill_clients(nodes)
        # Each face's next round trip finds its connection closed and
        # retries on a new one: a hit, not an error or a recomputation.
        assert f(1) == 1
        assert asyncio.run(g(2)) == 2
        assert runs == [1, 2]
    finally:
        clear_backends(pkg)


@pytest.mark.parametrize("form", FORMS, indirect=True)
def test_health_check_finds_closed_connections_without_retries(form, pkg):
    """With no retries, the PING of a connection idle longer than the
    interval (0 here: every use) is what replaces it."""
    url, nodes = form
    cachu.configure(
        redis_url=url,
        package=pkg,
        fail_open=False,
        redis_retry_count=0,
        redis_health_check_interval=0.0,
    )
    f, g, runs = counted(pkg)
    try:
        assert f(1) == 1
        assert asyncio.run(g(2)) == 2
        for _ in range(3):
            kill_clients(nodes)
            assert f(1) == 1
            assert asyncio.run(g(2)) == 2
        assert runs == [1, 2]
    finally:
        clear_backends(pkg)


@pytest.mark.parametrize("form", ["single", "sentinels"], indirect=True)
def test_without_retry_or_health_check_a_closed_connection_fails_the_call(form, pkg):
    """The counter-proof: retries off, health checks far apart, so the
    closed connection is used and the call fails (fail_open is off). (On a
    cluster the crate reconnects within its own redirect budget.)"""
    url, nodes = form
    cachu.configure(
        redis_url=url,
        package=pkg,
        fail_open=False,
        redis_retry_count=0,
        redis_health_check_interval=3600.0,
    )
    f, _, _ = counted(pkg)
    try:
        assert f(1) == 1
        kill_clients(nodes)
        with pytest.raises(cachu.BackendUnavailableError):
            f(1)
        # The failed connection was dropped: the next call let through (the
        # breaker refuses calls at once for its back-off) reconnects.
        deadline = time.monotonic() + 30
        while True:
            try:
                assert f(1) == 1
                break
            except cachu.BackendUnavailableError as e:
                assert "not tried again" in str(e)
                assert time.monotonic() < deadline
                time.sleep(0.01)
    finally:
        clear_backends(pkg)

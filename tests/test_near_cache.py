"""The Redis near cache (``redis_near_cache``): recently read entries kept in
process memory, never served once another client changed the key.

Everything runs against real ``redis-server`` processes; the other clients
are real processes too (``redis-cli``, a second Python process running
cachu, redis-py). Waits for an invalidation poll for the new value with a
bound; nothing sleeps and hopes. Whether a call was served near is told by
the server's own command counters (``INFO commandstats``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import time

import cachu
import pytest
from cachu.operations import cached_function
from near_helpers import BOUND, Source, commands, poll, stored


def cached(src, **options):
    """``src`` as a function named ``source``, cached in Redis for 300 s.
    Defined here, not in ``near_helpers``: cachu finds a function's
    package by its module, and the tests configure theirs."""

    def source(x):
        return src(x)

    return cachu.cache(ttl=300, backend="redis", **options)(source)


def state(backend):
    _capacity, tracking, flushes, invalidations = backend.near_state
    return {"tracking": tracking, "flushes": flushes, "invalidations": invalidations}


@pytest.fixture
def near(server, r, pkg):
    """A Redis-cached function of this package with a near cache of 100."""
    cachu.configure(backend="redis", redis_url=server.url, redis_near_cache=100)
    src = Source()
    f = cached(src)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    return f, src, backend


def warm(f, backend, x):
    """Call ``f(x)`` until its value is held near (tracking is up)."""
    poll(lambda: (f(x), backend.near_size >= 1)[1], "the near cache to hold the entry")


def served_near(f, r, x, n=50):
    """Call ``f(x)`` ``n`` times; the values, and whether Redis saw none."""
    before = commands(r)
    values = [f(x) for _ in range(n)]
    return values, commands(r) == before


def test_near_hits_make_no_round_trip(near, r):
    f, src, backend = near
    assert backend.near_size == 0
    warm(f, backend, 1)
    values, silent = served_near(f, r, 1)
    assert silent, "near hits must not reach Redis"
    assert values == [{"x": 1, "v": 0}] * 50
    assert src.runs == 1
    assert tracking_clients(r) == 1
    # Copy semantics, as for memory hits.
    values[0]["v"] = "changed"
    assert f(1) == {"x": 1, "v": 0}
    assert cachu.cache_info(f).hits >= 50


def test_off_by_default_and_no_tracking(server, r, pkg):
    cachu.configure(backend="redis", redis_url=server.url)
    f = cached(Source())
    f(1)
    f(1)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    assert backend.near_size == 0
    assert backend.near_state is None
    # Every call is a round trip, and no connection tracks keys.
    _, silent = served_near(f, r, 1, n=3)
    assert not silent
    # (Near caches of earlier tests stopped tracking when closed.)
    poll(lambda: tracking_clients(r) == 0, "no connection to track keys")


def tracking_clients(r) -> int:
    return sum("t" in c["flags"] for c in r.client_list())


def test_write_by_redis_py_is_seen(near, r):
    f, src, backend = near
    warm(f, backend, 1)
    key = f._key(x=1)
    r.set(key, ex=300, value=stored({"x": 1, "v": "from redis-py"}))
    poll(lambda: f(1)["v"] == "from redis-py", "the new value")
    assert src.runs == 1


def test_del_and_setex_by_redis_cli_are_seen(near, r, server):
    cli = shutil.which("redis-cli")
    assert cli, "redis-cli is not on PATH"
    f, src, backend = near
    warm(f, backend, 2)
    key = f._key(x=2)
    base = [cli, "-h", "127.0.0.1", "-p", str(server.port)]
    subprocess.run([*base, "DEL", key], check=True, capture_output=True, timeout=30)
    # Deleted: the next calls recompute (with the new source value).
    src.value[2] = "recomputed"
    poll(lambda: f(2)["v"] == "recomputed", "a recomputation after DEL")
    assert src.runs == 2
    warm(f, backend, 2)
    # SETEX from redis-cli, the value read from stdin (-x).
    subprocess.run(
        [*base, "-x", "SETEX", key, "300"],
        input=stored({"x": 2, "v": "from redis-cli"}),
        check=True,
        capture_output=True,
        timeout=30,
    )
    poll(lambda: f(2)["v"] == "from redis-cli", "the value redis-cli wrote")
    assert src.runs == 2


WRITER = textwrap.dedent(
    """
    import sys, cachu
    url, value = sys.argv[1], sys.argv[2]
    cachu.configure(backend="redis", redis_url=url, redis_near_cache=int(sys.argv[3]))

    @cachu.cache(ttl=300, backend="redis")
    def source(x):
        raise AssertionError("never called")

    source.set({"x": 3, "v": value}, x=3)
    print(source.get(x=3)["v"])
    """
)


@pytest.mark.parametrize("writer_near", [0, 50])
def test_another_cachu_process_writes(near, r, pkg, tmp_path, writer_near):
    f, src, backend = near
    warm(f, backend, 3)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = subprocess.run(
        [sys.executable, str(script), r_url(r), "other", str(writer_near)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # Its own write is what it reads back at once.
    assert out.stdout.strip() == "other"
    poll(lambda: f(3)["v"] == "other", "the other process's value")
    assert src.runs == 1


def r_url(r) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/0"


def test_own_writes_are_seen_at_once(near, r):
    f, src, backend = near
    warm(f, backend, 4)
    f.set({"x": 4, "v": "set"}, x=4)
    assert f(4) == {"x": 4, "v": "set"}
    f.invalidate(x=4)
    src.value[4] = "after invalidate"
    assert f(4)["v"] == "after invalidate"
    warm(f, backend, 4)
    # A recomputation asked for, then a plain call: the new value at once.
    src.value[4] = "overwritten"
    assert f(4, _overwrite_cache=True)["v"] == "overwritten"
    assert f(4)["v"] == "overwritten"
    warm(f, backend, 4)
    src.value[4] = "after clear"
    cachu.cache_clear(backend="redis", ttl=300)
    assert f(4)["v"] == "after clear"


def test_client_kill_then_change_never_serves_the_old_value(near, r):
    f, _src, backend = near
    warm(f, backend, 5)
    before = state(backend)["flushes"]
    key = f._key(x=5)
    # Kill every connection but our peer's: cachu's reads and its tracking.
    r.client_kill_filter(_type="normal", skipme=True)
    r.set(key, ex=300, value=stored({"x": 5, "v": "changed while killed"}))
    # The loss is noticed (an event we wait for), then the old value is gone.
    poll(lambda: state(backend)["flushes"] > before, "the near cache to be flushed")
    assert f(5)["v"] == "changed while killed"
    # Tracking comes back, and invalidations work again.
    warm(f, backend, 5)
    r.set(key, ex=300, value=stored({"x": 5, "v": "after reconnect"}))
    poll(lambda: f(5)["v"] == "after reconnect", "an invalidation after reconnecting")


def test_redis_restart(near, r, server):
    f, src, backend = near
    warm(f, backend, 6)
    before = state(backend)["flushes"]
    server.restart()
    poll(lambda: state(backend)["flushes"] > before, "the near cache to be flushed")
    # The restarted server is empty: the value is computed again.
    src.value[6] = "after restart"

    def recomputed():
        try:
            return f(6)["v"] == "after restart"
        except cachu.BackendUnavailableError:
            return False

    poll(recomputed, "a recomputation after the restart")
    warm(f, backend, 6)
    peer = server.client()
    peer.set(f._key(x=6), ex=300, value=stored({"x": 6, "v": "after restart, changed"}))
    poll(lambda: f(6)["v"] == "after restart, changed", "an invalidation after the restart")
    peer.close()


def libc_fork() -> int:
    """fork(2) itself, without Python's at-fork hooks (cachu's hook closes
    its backends before a fork, which empties the near cache): the child
    then holds the parent's near entries, and must still never serve them."""
    import ctypes

    # PyDLL: the GIL stays held across the call, as os.fork holds it.
    return ctypes.PyDLL(None).fork()


@pytest.mark.parametrize("fork", [os.fork, libc_fork], ids=["os.fork", "libc fork"])
def test_a_forked_child_never_serves_the_parents_entries(near, r, server, fork):
    f, _src, backend = near
    warm(f, backend, 7)
    key = f._key(x=7)
    read, write = os.pipe()
    pid = fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read)
            peer = server.client()
            # The parent's tracking gets this invalidation, not the child.
            peer.set(key, ex=300, value=stored({"x": 7, "v": "changed in the child"}))
            got = f(7)["v"]
            os.write(write, str(got).encode())
            code = 0
        except BaseException as e:  # reported through the pipe
            os.write(write, repr(e).encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        got = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert got == "changed in the child"
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    poll(lambda: f(7)["v"] == "changed in the child", "the parent to see the change")


def test_eviction_under_maxmemory(own_server, pkg):
    server = own_server(extra_args=["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"])
    peer = server.client()
    cachu.configure(backend="redis", redis_url=server.url, redis_near_cache=100)
    src = Source()
    f = cached(src)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    warm(f, backend, 8)
    key = f._key(x=8)
    # Near hits do not touch the key in Redis, so LRU evicts it first.
    blob = b"x" * 100_000
    n = 0
    while peer.exists(key):
        peer.set(f"filler:{n}", blob)
        n += 1
        assert n < 1000, "the key was never evicted"
    src.value[8] = "recomputed"
    poll(lambda: f(8)["v"] == "recomputed", "a recomputation after eviction")
    peer.close()


def test_local_expiry_without_an_invalidation(own_server, pkg):
    """With active expiry off, Redis sends nothing when a key's time is up
    (until someone touches it): the near entry expires on its own."""
    server = own_server(extra_args=["--enable-debug-command", "yes"])
    peer = server.client()
    peer.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    cachu.configure(backend="redis", redis_url=server.url, redis_near_cache=100)
    src = Source()
    f = cached(src)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    warm(f, backend, 9)
    peer.set(f._key(x=9), ex=1, value=stored({"x": 9, "v": "short"}))
    poll(lambda: f(9)["v"] == "short", "the short-lived value")
    warm(f, backend, 9)
    invalidations = state(backend)["invalidations"]
    src.value[9] = "after expiry"
    poll(lambda: f(9)["v"] == "after expiry", "the near entry to expire")
    # Only our own read expired it on the server: it went locally first.
    assert state(backend)["invalidations"] >= invalidations
    peer.close()


def test_validate_and_tags_still_apply(near, r, server, pkg):
    _f, _src, backend = near
    verdict = {"ok": True}
    g_src = Source()
    g = cached(g_src, tag="t", validate=lambda entry: verdict["ok"])
    poll(lambda: (g(1), backend.near_size >= 1)[1], "g's entry to be held near")
    _, silent = served_near(g, r, 1, n=10)
    assert silent
    verdict["ok"] = False
    g_src.value[1] = "revalidated"
    assert g(1)["v"] == "revalidated"
    verdict["ok"] = True
    # The recomputed value is what the next call sees, at once.
    assert g(1)["v"] == "revalidated"
    poll(lambda: (g(1), backend.near_size >= 1)[1], "g's entry to be held near again")
    g_src.value[1] = "after tag clear"
    cachu.cache_clear(tag="t")
    assert g(1)["v"] == "after tag clear"


def test_async_calls(near, r):
    _f, _src, backend = near
    a_src = Source()

    async def asource(x):
        return a_src(x)

    af = cachu.cache(ttl=300, backend="redis")(asource)

    async def main():
        deadline = time.monotonic() + BOUND
        while True:
            await af(1)
            if backend.near_size >= 1 and r is not None:
                before = commands(r)
                values = [await af(1) for _ in range(20)]
                if commands(r) == before:
                    return values
            assert time.monotonic() < deadline, "async calls never served near"
            await asyncio.sleep(0.005)

    values = asyncio.run(main())
    assert values == [{"x": 1, "v": 0}] * 20
    r.set(cached_function(af)._key(x=1), ex=300, value=stored({"x": 1, "v": "changed"}))

    async def changed():
        deadline = time.monotonic() + BOUND
        while (await af(1))["v"] != "changed":
            assert time.monotonic() < deadline, "the change never showed"
            await asyncio.sleep(0.005)

    asyncio.run(changed())
    assert a_src.runs == 1


def test_flushall_empties_the_near_cache(near, r):
    f, src, backend = near
    warm(f, backend, 10)
    r.flushall()
    src.value[10] = "after flushall"
    poll(lambda: f(10)["v"] == "after flushall", "a recomputation after FLUSHALL")


def test_bounded_by_n(server, r, pkg):
    cachu.configure(backend="redis", redis_url=server.url, redis_near_cache=5)
    f = cached(Source())
    backend = cachu.get_backend("redis", pkg, ttl=300)
    warm(f, backend, 0)
    for _ in range(3):
        for x in range(50):
            f(x)
    assert 1 <= backend.near_size <= 5
    assert backend.near_state[0] == 5


# -- Redis Cluster (tracking on every master) and Sentinel ----------------------


@pytest.fixture
def topo(request, topology):
    return request.getfixturevalue(topology)


def topo_peer(topo, topology):
    return topo.client() if topology == "cluster" else topo.current_master().client()


@pytest.mark.parametrize("topology", ["cluster", "sentinels"])
def test_near_on_cluster_and_sentinel(topo, topology, pkg):
    cachu.configure(backend="redis", redis_url=topo.url, redis_near_cache=100, fail_open=False)
    src = Source()
    f = cached(src)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    xs = range(12)  # keys on every master of the cluster
    poll(
        lambda: ([f(x) for x in xs], backend.near_size >= len(xs))[1],
        "every key to be held near",
    )
    assert src.runs == len(xs)
    peer = topo_peer(topo, topology)
    try:
        for x in xs:
            peer.set(f._key(x=x), stored({"x": x, "v": "changed"}), ex=300)
        for x in xs:
            poll(lambda x=x: f(x)["v"] == "changed", f"the change of key {x}")
        assert src.runs == len(xs)
    finally:
        peer.close()


def tracks_the_new_master(f, backend, peer):
    """After a failover: ``f(1)`` is held near again, and a change that
    ``peer`` (a client of the new master) makes to it is seen."""

    def held():
        try:
            f(1)
            return backend.near_size >= 1
        except cachu.BackendUnavailableError:
            return False

    poll(held, "the key to be held near again", bound=60)
    try:
        peer.set(f._key(x=1), stored({"x": 1, "v": "on the new master"}), ex=300)
        poll(lambda: f(1)["v"] == "on the new master", "the change on the new master")
    finally:
        peer.close()


def test_cluster_failover_flushes_and_tracks_the_new_master(own_cluster, pkg):
    cluster = own_cluster()
    cachu.configure(backend="redis", redis_url=cluster.url, redis_near_cache=100)
    src = Source()
    f = cached(src)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    warm(f, backend, 1)
    key = f._key(x=1)
    before = state(backend)["flushes"]
    dead = cluster.node_of(key)
    cluster.kill(dead)
    poll(lambda: state(backend)["flushes"] > before, "the near cache to be flushed")
    cluster.wait_promoted(dead)
    tracks_the_new_master(f, backend, cluster.client())


@pytest.mark.parametrize("face", ["sync", "async"])
def test_backend_crud_is_near_aware(near, r, face):
    """The backend object's get/set/delete (and their awaitable forms): reads
    are served near, its own writes are seen at once, others' writes soon."""
    _f, _src, backend = near
    key = "5m:crud|k=1"
    from cachu.backends import NO_VALUE

    if face == "sync":

        def call(name, *args):
            return getattr(backend, name)(*args)

    else:

        def call(name, *args):
            return asyncio.run(getattr(backend, "a" + name)(*args))

    call("set", key, {"v": 1}, 300)
    poll(lambda: (call("get", key), backend.near_size >= 1)[1], "the entry to be held near")
    before = commands(r)
    assert [call("get", key) for _ in range(10)] == [{"v": 1}] * 10
    assert commands(r) == before, "near reads must not reach Redis"
    call("set", key, {"v": 2}, 300)
    assert call("get", key) == {"v": 2}
    poll(lambda: (call("get", key), backend.near_size >= 1)[1], "the entry to be held near")
    r.set(key, stored({"v": "peer"}), ex=300)
    poll(lambda: call("get", key) == {"v": "peer"}, "the peer's value")
    call("delete", key)
    assert call("get", key) is NO_VALUE


CLEARER = textwrap.dedent(
    """
    import sys, cachu
    cachu.configure(backend="redis", redis_url=sys.argv[1])
    print(cachu.cache_clear(backend="redis", ttl=300, global_clear=True))
    """
)


def test_a_clear_in_another_process_is_seen(near, r, tmp_path):
    f, src, backend = near
    warm(f, backend, 11)
    script = tmp_path / "clearer.py"
    script.write_text(CLEARER)
    out = subprocess.run(
        [sys.executable, str(script), r_url(r)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 1
    src.value[11] = "after the other process cleared"
    poll(lambda: f(11)["v"] == "after the other process cleared", "a recomputation")
    assert src.runs == 2


def test_sentinel_failover_flushes_and_tracks_the_new_master(own_sentinels, pkg):
    sentinels = own_sentinels()
    cachu.configure(backend="redis", redis_url=sentinels.url, redis_near_cache=100)
    src = Source()
    f = cached(src)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    warm(f, backend, 1)
    before = state(backend)["flushes"]
    dead = sentinels.kill_master()
    poll(lambda: state(backend)["flushes"] > before, "the near cache to be flushed")
    new = sentinels.wait_promoted(dead)
    tracks_the_new_master(f, backend, new.client())


def test_the_environment_variable_turns_it_on(server, tmp_path, clean_env):
    script = tmp_path / "env.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, cachu
            cachu.configure(backend="redis", redis_url=sys.argv[1])
            print(cachu.get_backend("redis", ttl=300).near_state[0])
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script), server.url],
        env={**clean_env, "CACHU_REDIS_NEAR_CACHE": "123"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "123"

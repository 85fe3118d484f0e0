"""The near cache keeps what this process writes, not only what it reads:
after a decorated call's miss-and-store, an ``_overwrite_cache`` call, the
function's ``set`` or the backend's ``set`` (sync and async), the next read
of the key here needs no round trip; and a value written meanwhile by
another client is never served in its place.

Real servers and real other processes only; whether a read reached Redis is
told by the server's own command counters (``INFO commandstats``).
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import subprocess
import sys
import textwrap
import threading

import cachu
import pytest
from cachu.backends import NO_VALUE
from cachu.operations import cached_function
from near_helpers import Source, commands, poll, stored


def cached(src, **options):
    """``src`` as a function named ``source``, cached in Redis for 300 s.
    Defined here, not in ``near_helpers``: cachu finds a function's
    package by its module, and the tests configure theirs."""

    def source(x):
        return src(x)

    return cachu.cache(ttl=300, backend="redis", **options)(source)


def tracking(backend) -> bool:
    return backend.near_state[1]


def silent(clients, read, n=10):
    """``read()`` ``n`` times: the values, and whether no server saw any."""
    before = commands(*clients)
    values = [read() for _ in range(n)]
    return values, commands(*clients) == before


def check_sync_writes(f, src, backend, clients, x):
    """Every sync write path, each followed by reads that reach no server."""
    # The decorator's miss, then its store: the value is kept.
    assert f(x) == {"x": x, "v": 0}
    values, quiet = silent(clients, lambda: f(x))
    assert quiet, "a read after the miss's store reached Redis"
    assert values == [{"x": x, "v": 0}] * 10
    assert src.runs == 1
    # A recomputation asked for (the lock taken, then the store releasing it).
    src.value[x] = "overwritten"
    assert f(x, _overwrite_cache=True)["v"] == "overwritten"
    values, quiet = silent(clients, lambda: f(x))
    assert quiet, "a read after _overwrite_cache reached Redis"
    assert values == [{"x": x, "v": "overwritten"}] * 10
    # The function's set, then the backend object's.
    f.set({"x": x, "v": "set"}, x=x)
    values, quiet = silent(clients, lambda: f(x))
    assert quiet, "a read after fn.set reached Redis"
    assert values == [{"x": x, "v": "set"}] * 10
    key = f._key(x=x)
    backend.set(key, {"x": x, "v": "backend"}, 300)
    values, quiet = silent(clients, lambda: backend.get(key))
    assert quiet, "a read after backend.set reached Redis"
    assert values == [{"x": x, "v": "backend"}] * 10
    assert f(x)["v"] == "backend"
    # Copy semantics, as for any near hit.
    values[0]["v"] = "mutated by the caller"
    assert backend.get(key)["v"] == "backend"
    assert src.runs == 2


@pytest.fixture
def near(server, r, pkg):
    cachu.configure(backend="redis", redis_url=server.url, redis_near_cache=100)
    src = Source()
    f = cached(src)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    # Tracking starts on first use; writes are kept once it is confirmed.
    poll(lambda: (backend.get("5m:warm"), tracking(backend))[1], "tracking to come up")
    return f, src, backend


def test_sync_writes_are_read_back_without_a_round_trip(near, r):
    f, src, backend = near
    check_sync_writes(f, src, backend, [r], 1)
    # Another client's write still shows (the kept entry is tracked).
    r.set(f._key(x=1), stored({"x": 1, "v": "peer"}), ex=300)
    poll(lambda: f(1)["v"] == "peer", "the peer's value")
    # A delete here drops the kept entry at once.
    backend.delete(f._key(x=1))
    assert backend.get(f._key(x=1)) is NO_VALUE


def test_a_store_after_script_flush_still_releases_its_lock(near, r):
    """The store's lock release is an EVALSHA; a server that forgot the
    script (SCRIPT FLUSH) gets it loaded, and the value is still kept."""
    f, src, _backend = near
    assert f(1)["v"] == 0
    r.script_flush()
    src.value[1] = "after SCRIPT FLUSH"
    assert f(1, _overwrite_cache=True)["v"] == "after SCRIPT FLUSH"
    assert r.keys("lock:*") == []
    values, quiet = silent([r], lambda: f(1))
    assert quiet
    assert values == [{"x": 1, "v": "after SCRIPT FLUSH"}] * 10


def test_a_written_entry_expires_with_its_redis_ttl(own_server, pkg):
    """With active expiry off, Redis sends nothing when the key's time is
    up: the entry written here goes on its own at the TTL it was written
    with."""
    server = own_server(extra_args=["--enable-debug-command", "yes"])
    peer = server.client()
    peer.execute_command("DEBUG", "SET-ACTIVE-EXPIRE", "0")
    cachu.configure(backend="redis", redis_url=server.url, redis_near_cache=100)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    poll(lambda: (backend.get("5m:warm"), tracking(backend))[1], "tracking to come up")
    key = "5m:short|k=1"
    backend.set(key, {"v": "short"}, 1)
    values, quiet = silent([peer], lambda: backend.get(key))
    assert quiet and values == [{"v": "short"}] * 10
    # Nothing tells this process the key is gone (until a read touches it on
    # the server): were the entry kept past its TTL, this would never end.
    poll(lambda: backend.get(key) is NO_VALUE, "the entry to expire")
    peer.close()


def test_async_writes_are_read_back_without_a_round_trip(near, r):
    _f, _src, backend = near
    src = Source()

    async def asource(x):
        return src(x)

    af = cachu.cache(ttl=300, backend="redis")(asource)

    async def reads(read, n=10):
        before = commands(r)
        values = [await read() for _ in range(n)]
        return values, commands(r) == before

    async def main():
        assert await af(1) == {"x": 1, "v": 0}
        values, quiet = await reads(lambda: af(1))
        assert quiet, "an async read after the miss's store reached Redis"
        assert values == [{"x": 1, "v": 0}] * 10
        src.value[1] = "overwritten"
        assert (await af(1, _overwrite_cache=True))["v"] == "overwritten"
        values, quiet = await reads(lambda: af(1))
        assert quiet, "an async read after _overwrite_cache reached Redis"
        assert values == [{"x": 1, "v": "overwritten"}] * 10
        await af.set({"x": 1, "v": "set"}, x=1)
        values, quiet = await reads(lambda: af(1))
        assert quiet, "an async read after fn.set reached Redis"
        assert values == [{"x": 1, "v": "set"}] * 10
        key = "5m:crud|k=1"
        await backend.aset(key, {"v": "aset"}, 300)
        values, quiet = await reads(lambda: backend.aget(key))
        assert quiet, "an async read after aset reached Redis"
        assert values == [{"v": "aset"}] * 10
        assert src.runs == 2

    asyncio.run(main())


@pytest.mark.parametrize("topology", ["cluster", "sentinels"])
def test_writes_on_a_cluster_or_sentinel_master_are_read_back_without_a_round_trip(
    request, topology, pkg
):
    topo = request.getfixturevalue(topology)
    cachu.configure(backend="redis", redis_url=topo.url, redis_near_cache=100)
    src = Source()
    f = cached(src)
    backend = cachu.get_backend("redis", pkg, ttl=300)
    poll(lambda: (backend.get("5m:warm"), tracking(backend))[1], "tracking to come up")
    if topology == "cluster":
        servers = topo.master_nodes()
        xs = range(12)
        # Keys on every master: each is written on its own master's
        # tracking connection.
        assert {topo.node_of(f._key(x=x)).port for x in xs} == {s.port for s in servers}
    else:
        servers = [topo.current_master()]
        xs = range(2)
    nodes = [s.client() for s in servers]
    try:
        for x in xs:
            src.runs = 0
            check_sync_writes(f, src, backend, nodes, x)
        peer = topo.client() if topology == "cluster" else servers[0].client()
        try:
            for x in xs:
                peer.set(f._key(x=x), stored({"x": x, "v": "peer"}), ex=300)
            for x in xs:
                poll(lambda x=x: f(x)["v"] == "peer", f"the peer's value of key {x}")
        finally:
            peer.close()
    finally:
        for n in nodes:
            n.close()


# -- another client racing our writes --------------------------------------------

HAMMER = textwrap.dedent(
    """
    import os, pickle, select, struct, sys, time
    import redis

    url, keys = sys.argv[1], sys.argv[2:]
    r = redis.Redis.from_url(url)
    n = 0
    while os.read(0, 1) == b"g":
        # SET the keys as fast as one connection can, until told to stop.
        first = True
        while first or not select.select([0], [], [], 0)[0]:
            for k in keys:
                n += 1
                value = struct.pack("d", time.time()) + pickle.dumps({"by": "peer", "n": n})
                r.set(k, value, ex=300)
            if first:
                print("going", flush=True)
                first = False
        assert os.read(0, 1) == b"s"
        print(n, flush=True)
    """
)


class Hammer:
    """Another process SETting ``keys`` in a tight loop while told to go."""

    def __init__(self, tmp_path, url, keys):
        script = tmp_path / "hammer.py"
        script.write_text(HAMMER)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), url, *keys],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def tell(self, what: bytes) -> bytes:
        self.proc.stdin.write(what)
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the hammer process died"
        return line.strip()

    def go(self):
        """Start it; returns once it is SETting."""
        assert self.tell(b"g") == b"going"

    def stop(self) -> int:
        """Stop it; returns once its last SET is done: how many so far."""
        return int(self.tell(b"s"))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def kill_tracking(r):
    """Kill this process's tracking connections (CLIENT KILL)."""
    for c in r.client_list():
        if "t" in c["flags"]:
            r.client_kill_filter(_id=c["id"])


def r_url(r) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw['host']}:{kw['port']}/0"


@pytest.mark.parametrize("face", ["sync", "async"])
def test_a_racing_writer_is_never_hidden_by_our_written_copy(near, r, tmp_path, face):
    """Our process writes (every write path) and reads the same keys that
    another process SETs as fast as it can. Each time the other stops, every
    key read here must soon be exactly what Redis holds: a copy of ours kept
    although the other wrote after it would never be invalidated again."""
    f, _src, backend = near

    async def asource(x):
        return {"x": x, "v": "async"}

    af = cachu.cache(ttl=300, backend="redis")(asource)
    xs = range(4)
    # The keys of the function this face calls, which the other process SETs.
    g = f if face == "sync" else cached_function(af)
    keys = [g._key(x=x) for x in xs]

    def write(i, x):
        match i % 3:
            case 0:
                backend.set(keys[x], {"by": "us", "n": i}, 300)
            case 1:
                f.set({"by": "us", "n": i}, x=x)
            case 2:
                f(x, _overwrite_cache=True)
        backend.get(keys[x])

    async def awrite(i, x):
        match i % 3:
            case 0:
                await backend.aset(keys[x], {"by": "us", "n": i}, 300)
            case 1:
                await af.set({"by": "us", "n": i}, x=x)
            case 2:
                await af(x, _overwrite_cache=True)
        await backend.aget(keys[x])

    async def arun(n, kill):
        for i in range(n):
            for x in xs:
                await awrite(i, x)
            if i == 30 and kill:
                # A lost tracking connection, writes in flight.
                kill_tracking(r)

    def agree():
        return all(backend.get(k) == pickle.loads(r.get(k)[8:]) for k in keys)

    def read_along(done):
        # Reads of ours racing our writes (a read that saw the value a
        # write replaced must not keep it).
        while not done.is_set():
            for k in keys:
                backend.get(k)

    hammer = Hammer(tmp_path, r_url(r), keys)
    try:
        counts = [0]
        flushes = backend.near_state[2]
        for round_ in range(25):
            kill = round_ % 5 == 4
            hammer.go()
            done = threading.Event()
            reader = threading.Thread(target=read_along, args=(done,))
            reader.start()
            try:
                if face == "sync":
                    for i in range(60):
                        for x in xs:
                            write(i, x)
                        if i == 30 and kill:
                            # A lost tracking connection, writes in flight.
                            kill_tracking(r)
                else:
                    asyncio.run(arun(60, kill))
            finally:
                done.set()
                reader.join()
            counts.append(hammer.stop())
            poll(agree, "every key read here to be what Redis holds")
        # The other process wrote in every round; the kills were noticed.
        assert all(b > a for a, b in itertools.pairwise(counts))
        assert backend.near_state[2] >= flushes + 5
    finally:
        hammer.close()

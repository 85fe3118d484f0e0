"""The Redis backend on a Redis Cluster (3 masters + 3 replicas) and on a
Sentinel service (master + replica + 3 sentinels): everything the single-node
backend does, through ``redis+cluster://`` and ``redis+sentinel://`` URLs.

The topologies are real ``redis-server`` processes on loopback ports
(``redis_topology.py``), shared by the session and flushed before each test;
a raw redis-py client (``RedisCluster``, or the master's ``Redis``) plays the
peer.
"""

import asyncio
import os
import pickle
import struct
import time

import cachu
import pytest
import redis
from cachu.backends import NO_VALUE
from cachu.decorator import clear_backends
from helpers import run_threads, within
from redis.cluster import RedisCluster

pytestmark = pytest.mark.parametrize("topology", ["cluster", "sentinels"])


@pytest.fixture
def topo(request, topology):
    """The running topology the test is parametrized with."""
    return request.getfixturevalue(topology)


@pytest.fixture
def peer(topo, topology):
    """A raw redis-py client of the topology (the cluster, or the master)."""
    c = topo.client() if topology == "cluster" else topo.current_master().client()
    yield c
    c.close()


def all_keys(peer) -> list[str]:
    if isinstance(peer, RedisCluster):
        keys = peer.keys(target_nodes=RedisCluster.PRIMARIES)
    else:
        keys = peer.keys()
    return sorted(k.decode() if isinstance(k, bytes) else k for k in keys)


def configure(topo, pkg, **options):
    options.setdefault("fail_open", False)
    cachu.configure(backend="redis", redis_url=topo.url, package=pkg, **options)


def test_decorated_sync_calls_miss_then_hit_under_the_mangled_key(topo, peer, pkg):
    configure(topo, pkg)
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(x):
        runs.append(x)
        return {"x": x}

    for x in range(40):
        assert f(x) == {"x": x}
    for x in range(40):
        assert f(x) == {"x": x}
    assert runs == list(range(40))
    # The value keys are the mangled keys (0.2.7's layout); no lock is left.
    keys = all_keys(peer)
    assert keys == sorted(f"5m:f|x={x}" for x in range(40))
    raw = peer.get(keys[0])
    assert abs(struct.unpack("d", raw[:8])[0] - time.time()) < 60
    assert pickle.loads(raw[8:])["x"] in range(40)


def test_decorated_async_calls(topo, peer, pkg):
    configure(topo, pkg)
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    async def f(x):
        runs.append(x)
        return [x]

    async def main():
        first = await asyncio.gather(*(f(x) for x in range(20)))
        again = await asyncio.gather(*(f(x) for x in range(20)))
        return first, again

    first, again = asyncio.run(main())
    assert first == again == [[x] for x in range(20)]
    assert sorted(runs) == list(range(20))
    assert not [k for k in all_keys(peer) if k.startswith("lock:")]


def test_threads_share_one_computation_per_key(topo, pkg):
    configure(topo, pkg)
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(x):
        runs.append(x)
        time.sleep(0.05)
        return x

    def caller():
        for x in range(16):
            assert f(x) == x

    run_threads([caller] * 8)
    assert sorted(runs) == list(range(16))


def test_keys_with_braces_never_cross_slots(topo, pkg):
    """Dict reprs put `{` and `}` in keys, `{}` among them: each value and
    its lock stay in one slot, so no call fails (fail_open is off)."""
    configure(topo, pkg)
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(d, s=""):
        runs.append(1)
        return d

    args = [{}, {"a": {}}, {"a": {"b": 1}}, {"{": "}"}, {"}": "{"}]
    args += [{f"k{i}": i} for i in range(60)]
    suffixes = ["", "{", "}", "{}", "}{", "{x}", "{{}}"]
    for d in args:
        for s in suffixes:
            assert f(d, s) == d
            assert f(d, s) == d
    assert len(runs) == len(args) * len(suffixes)
    # A held lock makes the next caller wait on that same slot, and a
    # stored value ends the wait: a lock taken by another caller is seen.
    inst = cachu.get_backend("redis", pkg, ttl=300)
    assert inst.count() == len(args) * len(suffixes)


def test_helpers_crud_and_cache_info(topo, peer, pkg):
    configure(topo, pkg)

    @cachu.cache(ttl=60, backend="redis", tag="users", package=pkg)
    def user(uid):
        return {"id": uid}

    user(1)
    user(1)
    info = cachu.cache_info(user)
    assert (info.hits, info.misses) == (1, 1)
    assert cachu.cache_get(user, uid=1) == {"id": 1}
    cachu.cache_set(user, {"id": "set"}, uid=2)
    assert user(2) == {"id": "set"}
    cachu.cache_delete(user, uid=2)
    assert cachu.cache_get(user, default="gone", uid=2) == "gone"
    for uid in range(3, 30):
        user(uid)
    assert cachu.cache_clear(tag="users", backend="redis", ttl=60, package=pkg) == 28
    assert all_keys(peer) == []


def test_get_backend_objects(topo, peer, pkg):
    configure(topo, pkg)
    inst = cachu.get_backend("redis", pkg, ttl=300)
    inst.set("a{b}c", [1], 300)
    inst.set("{}", {"k": "v"}, 300)
    inst.set("plain", "p", 300)
    assert inst.get("a{b}c") == [1]
    assert inst.get("{}") == {"k": "v"}
    assert inst.get_with_metadata("plain")[0] == "p"
    assert sorted(inst.keys()) == ["a{b}c", "plain", "{}"]
    assert inst.count("*{*") == 2
    inst.delete("plain")
    assert inst.get("plain") is NO_VALUE
    assert inst.clear() == 2
    assert all_keys(peer) == []


def test_clear_and_count_walk_every_master(topo, topology, peer, pkg):
    configure(topo, pkg)

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(x):
        return x

    for x in range(300):
        f(x)
    if topology == "cluster":
        masters = topo.master_nodes()
        assert len(masters) == 3
        per_master = []
        for m in masters:
            c = m.client()
            per_master.append(c.dbsize())
            c.close()
        assert all(n > 0 for n in per_master) and sum(per_master) == 300, per_master
    inst = cachu.get_backend("redis", pkg, ttl=300)
    assert inst.count() == 300
    assert len(list(inst.keys())) == 300
    assert cachu.cache_clear(backend="redis", ttl=300, package=pkg) == 300
    assert all_keys(peer) == []


def test_get_redis_client_is_the_topology_client(topo, topology, peer, pkg):
    configure(topo, pkg)
    client = cachu.get_redis_client(package=pkg)
    try:
        if topology == "cluster":
            assert isinstance(client, RedisCluster)
        else:
            assert isinstance(client, redis.Redis)
            assert client.execute_command("ROLE")[0] in (b"master", "master")
        client.set("from-client", b"x")
        assert peer.get("from-client") == b"x"
    finally:
        client.close()


def test_nothing_listening_fails_open(topology, pkg):
    """No node answers: a decorated call computes and returns (fail_open),
    or raises BackendUnavailableError with fail_open=False."""
    from redis_server import free_port

    ports = [free_port(), free_port()]
    hosts = ",".join(f"127.0.0.1:{p}" for p in ports)
    url = f"redis+cluster://{hosts}" if topology == "cluster" else f"redis+sentinel://{hosts}/svc"
    cachu.configure(backend="redis", redis_url=url, package=pkg, redis_socket_timeout=0.5)
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(x):
        runs.append(x)
        return x

    try:
        assert within(60, f, 1) == 1
        assert within(60, f, 1) == 1
        assert runs == [1, 1]
        cachu.configure(package=pkg, fail_open=False)
        with pytest.raises(cachu.BackendUnavailableError):
            within(60, f, 2)
    finally:
        clear_backends(pkg)


def test_fork_child_uses_fresh_connections(topo, pkg):
    configure(topo, pkg)

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    def f(x):
        return {"x": x, "pid": os.getpid()}

    parent_value = f(1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            ok = f(1) == parent_value and f(2)["pid"] == os.getpid()
            os.write(write, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write)
    got = within(60, os.read, read, 10)
    os.close(read)
    os.waitpid(pid, 0)
    assert got == b"ok"
    # The parent's connections still work, and see the child's value.
    assert f(2)["pid"] == pid
    assert f(1) == parent_value

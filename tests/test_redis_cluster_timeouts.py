"""A frozen (SIGSTOPped) cluster master costs a call one round trip that
times out, never a retry of it: the number of commands the frozen node
received, read from its own ``INFO commandstats`` after ``SIGCONT``, is the
number of calls made, on the sync and on the async face.

Each caller uses a package of its own, so that no circuit breaker keeps a
caller from the backend: every call makes exactly one attempt. The cluster's
node timeout is long, so that no replica takes over while the node is
frozen (a failover would move the slot, and the count, elsewhere).
"""

import asyncio
import os
import signal
import threading

import cachu
import redis
from helpers import run_threads, within
from redis.crc import key_slot
from redis_topology import wait_until

CALLERS = 8
#: No failover while frozen: the node may be frozen for this long.
NODE_TIMEOUT_MS = 120_000
#: Data commands of the backend (a lookup, a store, a delete), as a client
#: sends them; connection upkeep (PING, CLIENT, CLUSTER, HELLO...) and the
#: commands run inside scripts are not counted.
DATA_COMMANDS = {"GET", "EVALSHA", "EVAL", "SET", "SETEX", "DEL", "UNLINK"}
MARKER = "cachu-test-marker"


class Received:
    """The data commands clients send ``node`` from now on, as its
    ``MONITOR`` reports them (in the order it runs them)."""

    def __init__(self, node):
        self.node = node
        self.client = node.client(socket_timeout=None)
        self.monitor = self.client.monitor().__enter__()
        self.data = 0
        self.marker = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            try:
                line = self.monitor.next_command()
            except (redis.RedisError, OSError, ValueError):
                return
            if line is None or line["client_type"] == "lua":
                continue
            name, _, rest = line["command"].partition(" ")
            if name.upper() in DATA_COMMANDS:
                self.data += 1
            elif name.upper() == "ECHO" and rest == MARKER:
                self.marker.set()

    def settled(self) -> int:
        """The count once the node has run everything sent before now: a
        marker sent on a new connection runs after what already waited in
        the node's sockets."""
        c = self.node.client()
        try:
            c.echo(MARKER)
        finally:
            c.close()
        assert self.marker.wait(30), "the node's MONITOR never showed the marker"
        self.marker.clear()
        return self.data

    def close(self):
        self.client.close()
        self.thread.join(10)


def owner(cluster, key: str):
    """The master of ``key``'s slot."""
    slot = key_slot(key.encode())
    c = cluster.running()[0].client()
    try:
        for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in cluster.nodes if n.port == master[1])
    finally:
        c.close()
    raise AssertionError(f"no master serves slot {slot}")


def packages(cluster, pkg):
    names = [f"{pkg}_{i}" for i in range(CALLERS)]
    for name in names:
        # fail_open (the default): a call the cache cannot serve runs the
        # function.
        cachu.configure(redis_url=cluster.url, package=name, redis_socket_timeout=1.0)
    return names


class Frozen:
    """SIGSTOP ``node`` for the ``with`` block; on leaving, SIGCONT it."""

    def __init__(self, node):
        self.node = node

    def __enter__(self):
        os.kill(self.node.proc.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        os.kill(self.node.proc.pid, signal.SIGCONT)


def cached_again(fns, runs) -> bool:
    """A pass over every package followed by one that computes nothing."""
    for f in fns:
        assert f(1) == {"x": 1}
    before = len(runs)
    for f in fns:
        assert f(1) == {"x": 1}
    return len(runs) == before


def test_sync_calls_send_a_frozen_master_one_command_each(own_cluster, pkg):
    cluster = own_cluster(node_timeout_ms=NODE_TIMEOUT_MS)
    names = packages(cluster, pkg)
    runs = []

    def cached(name):
        @cachu.cache(ttl=300, backend="redis", package=name)
        def f(x):
            runs.append(x)
            return {"x": x}

        return f

    fns = [cached(name) for name in names]
    for f in fns:
        assert f(1) == {"x": 1}
        assert f(1) == {"x": 1}
    assert runs == [1]
    node = owner(cluster, fns[0]._key(x=1))
    received = Received(node)

    start = threading.Barrier(CALLERS)

    def caller(f):
        def call():
            start.wait(30)
            assert f(1) == {"x": 1}

        return call

    with Frozen(node):
        run_threads([caller(f) for f in fns], timeout=60)
    # Every caller ran the function (its lookup timed out), and sent one
    # lookup.
    assert len(runs) == 1 + CALLERS
    # Once resumed, the node runs what waited in its sockets: one command
    # per call (a retried round trip would add more).
    assert received.settled() == CALLERS
    received.close()
    # The connections lived through it: caching goes on (once each
    # breaker lets a probe through).
    wait_until("caching to resume", lambda: cached_again(fns, runs), timeout=60)


def test_async_calls_send_a_frozen_master_one_command_each(own_cluster, pkg):
    cluster = own_cluster(node_timeout_ms=NODE_TIMEOUT_MS)
    names = packages(cluster, pkg)
    runs = []

    def cached(name):
        @cachu.cache(ttl=300, backend="redis", package=name)
        async def f(x):
            runs.append(x)
            return {"x": x}

        return f

    fns = [cached(name) for name in names]

    async def each_once():
        return await asyncio.gather(*(f(1) for f in fns))

    async def warm():
        for f in fns:
            assert await f(1) == {"x": 1}
            assert await f(1) == {"x": 1}

    asyncio.run(warm())
    assert runs == [1]
    node = owner(cluster, fns[0]._cachu._key(x=1))
    received = Received(node)
    with Frozen(node):
        assert within(60, asyncio.run, each_once()) == [{"x": 1}] * CALLERS
    assert len(runs) == 1 + CALLERS
    # Once resumed, the node runs what waited in its sockets: one command
    # per call (a retried round trip would add more).
    assert received.settled() == CALLERS
    received.close()

    def all_cached_again():
        async def twice():
            await each_once()
            before = len(runs)
            await each_once()
            return len(runs) == before

        return asyncio.run(twice())

    wait_until("caching to resume", all_cached_again, timeout=60)

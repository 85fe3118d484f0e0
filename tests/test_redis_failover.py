"""Redis Cluster and Sentinel through real faults: a master killed (SIGKILL)
while 8 threads call, a master frozen (SIGSTOP), a slot range resharded while
calls run, and 4 processes racing for one missing key on the cluster.

Every claim is proved by counts (calls completed, computations, errors), and
hangs by generous guards; no duration is asserted.
"""

import json
import os
import subprocess
import sys
import time

import cachu
import pytest
from helpers import within
from redis_topology import redis_cli_binary, wait_until
from topology_load import KEYS, Load, assert_caching_resumed, counted

HELPERS = os.path.join(os.path.dirname(__file__), "redis_helpers")


def test_cluster_master_killed_under_load(own_cluster, pkg):
    cluster = own_cluster()
    cachu.configure(redis_url=cluster.url, package=pkg, redis_socket_timeout=1.0)
    f, runs = counted(pkg)
    for x in KEYS:
        f(x)
    assert sorted(runs) == list(KEYS)
    victim = cluster.node_of("5m:f|x=0")
    with Load(f) as load:
        load.completed_at_least(200)
        cluster.kill(victim)
        cluster.wait_promoted(victim)
        done_at_promotion = load.completed
        load.completed_at_least(done_at_promotion + 200)
    assert load.errors == []
    assert load.wrong == 0
    assert_caching_resumed(f, runs)
    # The backend object, too, works on the new topology without a restart.
    assert cachu.get_backend("redis", pkg, ttl=300).count() == len(KEYS)


def test_sentinel_master_killed_under_load(own_sentinels, pkg):
    sentinels = own_sentinels()
    cachu.configure(redis_url=sentinels.url, package=pkg, redis_socket_timeout=1.0)
    f, runs = counted(pkg)
    for x in KEYS:
        f(x)
    with Load(f) as load:
        load.completed_at_least(200)
        dead = sentinels.kill_master()
        sentinels.wait_promoted(dead)
        done_at_promotion = load.completed
        load.completed_at_least(done_at_promotion + 200)
    assert load.errors == []
    assert load.wrong == 0
    assert_caching_resumed(f, runs)


@pytest.mark.parametrize("kind", ["cluster", "sentinels"])
def test_async_calls_follow_a_failover(kind, own_cluster, own_sentinels, pkg):
    import asyncio

    topo = own_cluster() if kind == "cluster" else own_sentinels()
    # A killed node refuses at once, so the socket timeout is not what this
    # test waits on; a generous one keeps a loaded machine's slow reply from
    # counting as an outage (which re-opens the breaker and delays resuming).
    cachu.configure(redis_url=topo.url, package=pkg, redis_socket_timeout=5.0)
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=pkg)
    async def f(x):
        runs.append(x)
        return x

    async def pass_over_keys():
        return await asyncio.gather(*(f(x) for x in KEYS))

    assert asyncio.run(pass_over_keys()) == list(KEYS)
    if kind == "cluster":
        victim = topo.node_of("5m:f|x=0")
        topo.kill(victim)
    else:
        victim = topo.kill_master()
    # While the slots have no master: calls complete (uncached).
    assert within(60, asyncio.run, pass_over_keys()) == list(KEYS)
    topo.wait_promoted(victim)

    def resumed():
        asyncio.run(pass_over_keys())
        before = len(runs)
        asyncio.run(pass_over_keys())
        return len(runs) == before

    wait_until("async caching to resume", resumed, timeout=60)


@pytest.mark.parametrize("kind", ["cluster", "sentinels"])
def test_frozen_master_costs_a_timeout_not_a_hang(kind, own_cluster, own_sentinels, pkg):
    """SIGSTOP the master of a key: calls return after the socket timeout
    instead of hanging, and cache again after SIGCONT. (On the cluster the
    freeze may outlast cluster-node-timeout: its replica then takes over and
    the later calls hit there.)"""
    import signal

    topo = own_cluster() if kind == "cluster" else own_sentinels()
    cachu.configure(redis_url=topo.url, package=pkg, redis_socket_timeout=0.3)
    f, runs = counted(pkg)
    assert f(0) == {"x": 0}
    node = topo.node_of("5m:f|x=0") if kind == "cluster" else topo.current_master()
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            assert within(30, f, 0) == {"x": 0}
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)
    # The first call after the freeze computed; with no failover, all did.
    assert 2 <= len(runs) <= 4
    if kind == "sentinels":
        assert len(runs) == 4
    if kind == "cluster":
        topo.wait_ready()

    def cached_again():
        f(0)
        before = len(runs)
        f(0)
        return len(runs) == before

    wait_until("caching to resume", cached_again, timeout=60)


def test_resharding_while_calls_run(own_cluster, pkg):
    """Move 2000 slots from one master to another with redis-cli while 8
    threads call: MOVED and ASK are followed, no call fails even with
    fail_open off, and every value stays cached."""
    cluster = own_cluster()
    cachu.configure(redis_url=cluster.url, package=pkg, fail_open=False)
    f, runs = counted(pkg)
    for x in KEYS:
        f(x)
    masters = cluster.master_nodes()
    src, dst = masters[0], masters[1]

    def node_id(node):
        c = node.client()
        try:
            out = c.execute_command("CLUSTER", "MYID")
            return out.decode() if isinstance(out, bytes) else out
        finally:
            c.close()

    def slots_of(node):
        c = node.client()
        try:
            return sum(
                end - start + 1
                for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS")
                if master[1] == node.port
            )
        finally:
            c.close()

    before = slots_of(dst)
    with Load(f) as load:
        load.completed_at_least(100)
        subprocess.run(
            [
                redis_cli_binary(),
                "--cluster",
                "reshard",
                f"127.0.0.1:{src.port}",
                "--cluster-from",
                node_id(src),
                "--cluster-to",
                node_id(dst),
                "--cluster-slots",
                "2000",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        done = load.completed
        load.completed_at_least(done + 100)
    assert slots_of(dst) == before + 2000
    assert load.errors == []
    assert load.wrong == 0
    # Nothing was lost or computed twice: the values moved with their slots.
    assert sorted(runs) == list(KEYS)


def test_four_processes_compute_once_on_the_cluster(cluster, tmp_path):
    procs, threads = 4, 8
    start = time.time() + 3.0
    outs = [tmp_path / f"out{i}.json" for i in range(procs)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(HELPERS, "dogpile_worker.py"),
                cluster.url,
                repr(start),
                str(threads),
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    for child in children:
        stdout, stderr = child.communicate(timeout=90)
        assert child.returncode == 0, f"worker failed:\n{stdout}\n{stderr}"
    reports = [json.loads(out.read_text()) for out in outs]
    assert [e for rep in reports for e in rep["errors"]] == []
    results = [res for rep in reports for res in rep["results"]]
    assert len(results) == procs * threads
    assert all(res == results[0] for res in results)
    peer = cluster.client()
    try:
        assert int(peer.get("dogpile:runs")) == 1
    finally:
        peer.close()

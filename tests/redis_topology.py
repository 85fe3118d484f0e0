"""Real multi-node Redis topologies for the cluster and Sentinel tests: a
3-master + 3-replica Redis Cluster, and a master + replica watched by 3
sentinels, all on free loopback ports, built from ``redis_server.RedisServer``
processes. Every wait is bounded; everything started here is killed by its
owner.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis_server import RedisServer, free_port, redis_server_binary, short_tmpdir

#: How long a node must be unreachable before the others fail it over (ms).
CLUSTER_NODE_TIMEOUT_MS = 1000
#: How long Sentinel waits before it declares a master down (ms).
SENTINEL_DOWN_AFTER_MS = 1000
SERVICE = "mymaster"


def wait_until(what: str, check, timeout: float = 60.0, pause: float = 0.05):
    """Poll ``check()`` until it returns something true; fail after
    ``timeout`` seconds (a hang guard, not a measurement)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except (redis.RedisError, OSError) as e:
            last = e
        time.sleep(pause)
    raise RuntimeError(f"timed out waiting for {what} (last: {last!r})")


def cluster_port() -> int:
    """A free port for a cluster node: its bus listens on port + 10000, so
    the port must be at most 55535 and port + 10000 free too."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def redis_cli_binary() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        raise RuntimeError("redis-cli is not on PATH (it comes with redis-server)")
    return path


class Cluster:
    """A Redis Cluster of ``masters`` masters with one replica each;
    ``tls`` (``{'cert', 'key', 'ca'}`` paths, as
    ``redis_server.tls_material`` makes them) makes every node, and the
    cluster bus, speak TLS only; ``node_timeout_ms`` is how long a node may be unreachable before
    its replica takes over."""

    def __init__(
        self,
        masters: int = 3,
        tls: dict | None = None,
        node_timeout_ms: int = CLUSTER_NODE_TIMEOUT_MS,
    ) -> None:
        self.tls = tls
        self.nodes: list[RedisServer] = []
        tls_args = ("--tls-cluster", "yes", "--tls-replication", "yes") if tls else ()
        for _ in range(masters * 2):
            self.nodes.append(
                RedisServer(
                    port=cluster_port(),
                    tls=tls,
                    extra_args=(
                        *tls_args,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(node_timeout_ms),
                        # A replica takes over however long it was cut off.
                        "--cluster-replica-validity-factor",
                        "0",
                    ),
                )
            )
        self.masters = masters

    # -- addresses -------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL cachu uses: two of the nodes as seeds."""
        seeds = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])
        if self.tls:
            return f"rediss+cluster://{seeds}?ssl_ca_certs={self.tls['ca']}"
        return f"redis+cluster://{seeds}"

    def client(self) -> RedisCluster:
        """A raw redis-py cluster client (the test's peer)."""
        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", n.port) for n in self.running()],
            socket_timeout=5,
            socket_connect_timeout=5,
            **({"ssl": True, "ssl_ca_certs": self.tls["ca"]} if self.tls else {}),
        )

    def running(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc is not None]

    def node_of(self, key: str) -> RedisServer:
        """The node serving ``key``'s slot now (its master)."""
        first = self.running()[0].client()
        try:
            slot = first.execute_command("CLUSTER", "KEYSLOT", key)
            for start, end, master, *_ in first.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = master[1]
                    return next(n for n in self.nodes if n.port == port)
        finally:
            first.close()
        raise RuntimeError(f"no node serves the slot of {key!r}")

    def master_nodes(self) -> list[RedisServer]:
        out = []
        for n in self.running():
            c = n.client()
            try:
                if c.execute_command("ROLE")[0] in (b"master", "master"):
                    out.append(n)
            finally:
                c.close()
        return out

    # -- life cycle ------------------------------------------------------

    def start(self) -> Cluster:
        try:
            for i in range(len(self.nodes)):
                self._start_node(i)
            subprocess.run(
                [
                    redis_cli_binary(),
                    *(("--tls", "--cacert", self.tls["ca"]) if self.tls else ()),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in self.nodes),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            )
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _start_node(self, i: int) -> None:
        """Start node ``i``, on other ports if its own were taken meanwhile
        (other processes of the machine pick free ports too)."""
        for attempt in range(3):
            try:
                self.nodes[i].start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                old = self.nodes[i]
                old.close()
                self.nodes[i] = RedisServer(
                    port=cluster_port(), tls=old.tls, extra_args=old.extra_args
                )

    def _state_ok(self) -> bool:
        for n in self.running():
            c = n.client()
            try:
                info = c.execute_command("CLUSTER", "INFO")
                if isinstance(info, bytes):
                    info = info.decode()
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
            finally:
                c.close()
        return True

    def _replicas_synced(self) -> bool:
        replicas = 0
        for n in self.running():
            c = n.client()
            try:
                role = c.execute_command("ROLE")
                if role[0] in (b"slave", "slave"):
                    if role[3] not in (b"connected", "connected"):
                        return False
                    replicas += 1
            finally:
                c.close()
        return replicas >= 1

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every running node sees all slots served, and every replica
        is in sync with its master."""
        wait_until("the cluster to be ok", self._state_ok, timeout)
        wait_until("the replicas to sync", self._replicas_synced, timeout)

    def kill(self, node: RedisServer) -> None:
        """SIGKILL one node (its address stays known to the others)."""
        node.stop()

    def wait_promoted(self, dead: RedisServer, timeout: float = 60.0) -> None:
        """Until the slots of the killed master ``dead`` are served by
        another node and the cluster is ok again."""

        def served_elsewhere() -> bool:
            c = self.running()[0].client()
            try:
                slots = c.execute_command("CLUSTER", "SLOTS")
            finally:
                c.close()
            return bool(slots) and all(s[2][1] != dead.port for s in slots)

        wait_until("a replica to take over", served_elsewhere, timeout)
        wait_until("the cluster to be ok", self._state_ok, timeout)

    def restart(self, node: RedisServer) -> None:
        """Start a killed node again; it rejoins (as a replica, if its slots
        were taken over)."""
        node.start()
        self.wait_ready()

    def flush(self) -> None:
        for n in self.master_nodes():
            c = n.client()
            try:
                c.flushall()
            finally:
                c.close()

    def close(self) -> None:
        for n in self.nodes:
            n.close()


class Sentinels:
    """A master, one replica, and 3 sentinels watching them as ``SERVICE``;
    ``tls`` (as for ``Cluster``) makes the master and the replica speak TLS
    only, replication and the sentinels' connections to them included (the
    sentinels answer clients in plain text, as ``rediss+sentinel://``
    expects, and each other over TLS)."""

    def __init__(self, tls: dict | None = None) -> None:
        self.tls = tls
        data_args = ("--tls-replication", "yes") if tls else ()
        self.master = RedisServer(tls=tls, extra_args=data_args)
        self.replica = RedisServer(tls=tls, extra_args=data_args)
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinel_tls_ports = [free_port() for _ in range(3)] if tls else []
        self.sentinel_procs: list[subprocess.Popen | None] = [None, None, None]
        self.workdir = short_tmpdir("cs")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        if self.tls:
            return f"rediss+sentinel://{hosts}/{SERVICE}/0?ssl_ca_certs={self.tls['ca']}"
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def sentinel_client(self, i: int = 0) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.sentinel_ports[i],
            socket_timeout=5,
            socket_connect_timeout=5,
        )

    def master_port(self) -> int:
        for i, proc in enumerate(self.sentinel_procs):
            if proc is None:
                continue
            c = self.sentinel_client(i)
            try:
                addr = c.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
                return int(addr[1])
            except (redis.RedisError, OSError):
                continue
            finally:
                c.close()
        raise RuntimeError("no sentinel answers")

    def current_master(self) -> RedisServer:
        port = self.master_port()
        return next(n for n in (self.master, self.replica) if n.port == port)

    def _start_sentinel(self, i: int) -> None:
        conf = os.path.join(self.workdir, f"sentinel{i}.conf")
        with open(conf, "w") as f:
            f.write(
                f"port {self.sentinel_ports[i]}\n"
                "bind 127.0.0.1\n"
                f"dir {self.workdir}\n"
                f"logfile {os.path.join(self.workdir, f'sentinel{i}.log')}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {SENTINEL_DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            if self.tls:
                # A sentinel reaches the data nodes and the other sentinels
                # alike over TLS: each also listens with TLS, on the port it
                # announces to the others.
                tls_port = self.sentinel_tls_ports[i]
                f.write(
                    "tls-replication yes\n"
                    f"tls-port {tls_port}\n"
                    "tls-auth-clients no\n"
                    f"tls-cert-file {self.tls['cert']}\n"
                    f"tls-key-file {self.tls['key']}\n"
                    f"tls-ca-cert-file {self.tls['ca']}\n"
                    "sentinel announce-ip 127.0.0.1\n"
                    f"sentinel announce-port {tls_port}\n"
                )
        self.sentinel_procs[i] = subprocess.Popen(
            [redis_server_binary(), conf, "--sentinel"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> Sentinels:
        try:
            self.master.start()
            self.replica.extra_args += ("--replicaof", "127.0.0.1", str(self.master.port))
            self.replica.start()
            for i in range(3):
                self._start_sentinel(i)
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _sentinels_agree(self) -> bool:
        for i in range(3):
            c = self.sentinel_client(i)
            try:
                info = c.sentinel_master(SERVICE)
                if int(info["num-other-sentinels"]) < 2 or int(info["num-slaves"]) < 1:
                    return False
            finally:
                c.close()
        return True

    def _replica_synced(self) -> bool:
        replica = next(n for n in (self.master, self.replica) if n is not self.current_master())
        if replica.proc is None:
            return True
        c = replica.client()
        try:
            return c.info("replication").get("master_link_status") == "up"
        finally:
            c.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_until("the sentinels to know each other", self._sentinels_agree, timeout)
        wait_until("the replica to sync", self._replica_synced, timeout)

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; returns it."""
        dead = self.current_master()
        dead.stop()
        return dead

    def wait_promoted(self, dead: RedisServer, timeout: float = 60.0) -> RedisServer:
        """Until the sentinels name another master, and it answers as one."""
        wait_until("the sentinels to fail over", lambda: self.master_port() != dead.port, timeout)
        new = self.current_master()

        def is_master() -> bool:
            c = new.client()
            try:
                return c.execute_command("ROLE")[0] in (b"master", "master")
            finally:
                c.close()

        wait_until("the new master to take writes", is_master, timeout)
        return new

    def close(self) -> None:
        for proc in self.sentinel_procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.sentinel_procs = [None, None, None]
        self.master.close()
        self.replica.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

"""A throwaway Redis Cluster for the cluster rows of ``bench/run.py``.

Three masters and three replicas (``redis-server --cluster-enabled yes``,
``redis-cli --cluster create``) on free loopback ports, persisting nothing;
``owner_port`` names the master that serves a key, for the raw GET floor
(``bench/resp_floor.py``) the cluster rows are measured against.

Standard library only, so both the driver and its workers can import it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from resp_floor import RawConnection

MASTERS = 3


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def wait(what, check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def ask(port: int, *args: bytes) -> object:
    """One command on a connection of its own."""
    c = RawConnection(port)
    try:
        return c.command(*args)
    finally:
        c.close()


def slot_masters(any_port: int) -> list[int]:
    """The port of the master serving each of the 16384 slots."""
    masters = [0] * 16384
    for start, end, master, *_ in ask(any_port, b"CLUSTER", b"SLOTS"):
        masters[int(start) : int(end) + 1] = [int(master[1])] * (int(end) - int(start) + 1)
    return masters


def owner_port(any_port: int, key: bytes) -> int:
    """The port of the master serving ``key``'s slot."""
    port = slot_masters(any_port)[int(ask(any_port, b"CLUSTER", b"KEYSLOT", key))]
    if not port:
        raise RuntimeError(f"no master serves the slot of {key!r}")
    return port


class ThrowawayCluster:
    """Started on construction; ``pin(pid)`` is called with each node's pid
    (the driver pins them next to the worker, as it does the single
    server)."""

    def __init__(self, server_binary: str, cli_binary: str, pin=None) -> None:
        self.dir = tempfile.mkdtemp(prefix="cachu-bench-cluster-")
        self.ports = [free_cluster_port() for _ in range(MASTERS * 2)]
        self.procs: list[subprocess.Popen] = []
        try:
            for port in self.ports:
                d = os.path.join(self.dir, str(port))
                os.mkdir(d)
                proc = subprocess.Popen(
                    [server_binary, "--port", str(port), "--bind", "127.0.0.1"]
                    + ["--save", "", "--appendonly", "no", "--dir", d]
                    + ["--cluster-enabled", "yes", "--daemonize", "no"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                self.procs.append(proc)
                if pin is not None:
                    pin(proc.pid)
            for port in self.ports:
                wait(f"redis-server on {port}", lambda p=port: ask(p, b"PING") == b"PONG")
            subprocess.run(
                [cli_binary, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
                + ["--cluster-replicas", "1", "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            wait("the cluster", self._ok)
            # Each replica's first sync starts after the master's diskless
            # sync delay (5 s by default): until then writes reach no replica.
            wait("the replicas' first sync", self._replicated)
        except BaseException:
            self.stop()
            raise

    def _ok(self) -> bool:
        return all(b"cluster_state:ok" in ask(p, b"CLUSTER", b"INFO") for p in self.ports)

    def _replicated(self) -> bool:
        """Every master has a replica online, each replica's link is up."""
        infos = [ask(p, b"INFO", b"replication") for p in self.ports]
        masters = [i for i in infos if b"role:master" in i]
        replicas = [i for i in infos if b"role:slave" in i]
        return (
            len(masters) == MASTERS
            and all(b"connected_slaves:1" in i and b"state=online" in i for i in masters)
            and len(replicas) == MASTERS
            and all(b"master_link_status:up" in i for i in replicas)
        )

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]},127.0.0.1:{self.ports[1]}"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

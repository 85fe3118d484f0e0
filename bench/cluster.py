#!/usr/bin/env python3
"""Benchmark cachu on a Redis Cluster against one raw GET round trip.

    python bench/cluster.py [--repeats N] [--target-ms MS] [--json out.json]

Starts a throwaway 3-master + 3-replica cluster on free 127.0.0.1 ports
(``redis-server --cluster-enabled yes``, ``redis-cli --cluster create``), then
times, in the same run and rotating between them:

* ``raw GET``: one ``GET`` round trip to the node that owns the key, written
  as RESP by hand on a plain socket with ``TCP_NODELAY`` (no client library):
  the floor of any cache read;
* ``cluster hit``: a decorated ``f(x) -> dict`` over 64 cached keys, on
  ``redis+cluster://``;
* ``cluster miss + store``: the same function called with fresh arguments
  (get-or-lock, then store-and-unlock: two round trips);
* the same two rows on one plain ``redis-server`` (``redis://``), for
  comparison.

Each figure is the best (min) repeat in microseconds per call, with the
garbage collector off; the ratio is against the raw GET of the same run.
Needs the installed cachu and ``redis-server``/``redis-cli`` on PATH.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

KEYS = range(64)
TTL = 300


def free_port(cluster: bool = False) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not cluster:
            return port
        if port > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


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


class RawConnection:
    """A minimal RESP client: one command written, one reply read."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")

    def command(self, *args: bytes) -> object:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.reply()

    def reply(self) -> object:
        line = self.reader.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.reader.read(n + 2)[:-2]
        if kind in (b"+", b":"):
            return rest
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise RuntimeError(f"redis error: {rest!r}")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def start_node(workdir: str, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", workdir, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def pong():
        c = RawConnection(port)
        try:
            return c.command(b"PING") == b"PONG"
        finally:
            c.close()

    wait(f"redis-server on {port}", pong)
    return proc


def start_cluster(root: str) -> tuple[list[subprocess.Popen], list[int]]:
    ports = [free_port(cluster=True) for _ in range(6)]
    procs = []
    for port in ports:
        d = os.path.join(root, str(port))
        os.mkdir(d)
        procs.append(start_node(d, port, "--cluster-enabled", "yes"))
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        + ["--cluster-replicas", "1", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )

    def ok():
        for p in ports:
            c = RawConnection(p)
            try:
                if b"cluster_state:ok" not in c.command(b"CLUSTER", b"INFO"):
                    return False
            finally:
                c.close()
        return True

    wait("the cluster", ok)
    return procs, ports


def owner_port(any_port: int, key: bytes) -> int:
    c = RawConnection(any_port)
    try:
        slot = int(c.command(b"CLUSTER", b"KEYSLOT", key))
        for start, end, master, *_ in c.command(b"CLUSTER", b"SLOTS"):
            if int(start) <= slot <= int(end):
                return int(master[1])
    finally:
        c.close()
    raise RuntimeError("no owner")


def timed(fn, n: int) -> float:
    """Seconds per call of ``fn(i)`` over ``n`` calls, GC off."""
    gc_was = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for i in range(n):
            fn(i)
        return (time.perf_counter_ns() - t0) / n / 1e9
    finally:
        if gc_was:
            gc.enable()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--target-ms", type=float, default=30.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            print(f"{tool} is not on PATH", file=sys.stderr)
            return 2

    import cachu

    root = tempfile.mkdtemp(prefix="cb")
    procs: list[subprocess.Popen] = []
    raw: list[RawConnection] = []
    try:
        cprocs, ports = start_cluster(root)
        procs += cprocs
        single_dir = os.path.join(root, "single")
        os.mkdir(single_dir)
        single_port = free_port()
        procs.append(start_node(single_dir, single_port))

        cachu.configure(redis_url=f"redis+cluster://127.0.0.1:{ports[0]}", package="bc")
        cachu.configure(redis_url=f"redis://127.0.0.1:{single_port}/0", package="bs")

        def make(pkg):
            @cachu.cache(ttl=TTL, backend="redis", package=pkg)
            def f(x):
                return {"id": x, "name": f"user{x}", "score": x * 1.5}

            return f

        f_cluster, f_single = make("bc"), make("bs")
        for x in KEYS:
            f_cluster(x)
            f_single(x)

        # The raw floor: GET of one of the cached keys, on its owner node.
        key = b"5m:f|x=0"
        raw_cluster = RawConnection(owner_port(ports[0], key))
        raw_single = RawConnection(single_port)
        raw += [raw_cluster, raw_single]
        assert raw_cluster.command(b"GET", key) is not None
        assert raw_single.command(b"GET", key) is not None

        fresh = iter(range(10**6, 10**9))
        cases = {
            "raw GET, cluster owner node": lambda i: raw_cluster.command(b"GET", key),
            "cluster hit": lambda i: f_cluster(i & 63),
            "cluster miss + store": lambda i: f_cluster(next(fresh)),
            "raw GET, single node": lambda i: raw_single.command(b"GET", key),
            "single-node hit": lambda i: f_single(i & 63),
            "single-node miss + store": lambda i: f_single(next(fresh)),
        }
        sizes = {}
        for name, fn in cases.items():
            per_call = timed(fn, 200)
            sizes[name] = max(50, int(args.target_ms / 1000 / per_call))
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, fn in cases.items():
                samples[name].append(timed(fn, sizes[name]))
        best = {name: min(v) * 1e6 for name, v in samples.items()}
    finally:
        for c in raw:
            c.close()
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(root, ignore_errors=True)

    floors = {
        "cluster": best["raw GET, cluster owner node"],
        "single": best["raw GET, single node"],
    }
    print(f"{'scenario':<28} {'us/call':>9} {'x raw GET':>10}")
    for name, us in best.items():
        floor = floors["cluster"] if "cluster" in name else floors["single"]
        print(f"{name:<28} {us:>9.1f} {us / floor:>9.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"best_us": best, "samples_s": samples}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

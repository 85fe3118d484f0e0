"""The reference's Redis layout (COMPAT.md), written and read directly with
the tests' raw redis-py client, the peer that plays pure-Python cachu 0.2.7:

    value = struct.pack('d', created_at) + pickle.dumps(result), via SETEX
    lock  = SET lock:{mangled key} <token> NX EX int(lock_timeout)
"""

import contextlib
import pickle
import struct
import threading
import time
import uuid


def pack(value, created_at):
    """A value in the reference's Redis layout."""
    return struct.pack("d", created_at) + pickle.dumps(value)


def put_raw(r, key, value, ttl=300, created_at=None):
    """Store ``value`` as the reference does (SETEX)."""
    created_at = time.time() if created_at is None else created_at
    r.execute_command("SETEX", key, ttl, pack(value, created_at))


def read_raw(r, key):
    """``(created_at, value, pickle bytes)`` of a stored entry."""
    raw = r.get(key)
    assert raw is not None, f"{key!r} is not stored"
    assert len(raw) > 8, raw
    return struct.unpack("d", raw[:8])[0], pickle.loads(raw[8:]), raw[8:]


def raw_keys(r, pattern="*"):
    return sorted(k.decode() for k in r.scan_iter(match=pattern, count=1000))


def assert_no_locks(r):
    assert raw_keys(r, "lock:*") == []


def assert_ttl_about(r, key, ttl):
    pttl = r.pttl(key)
    assert (ttl - 3) * 1000 < pttl <= ttl * 1000, (key, pttl)


@contextlib.contextmanager
def requests_seen(server):
    """The commands clients sent to the server while the block ran, as
    ``[command name, ...]``, commands run *inside* scripts excluded.

    INFO commandstats cannot tell a script's own ``redis.call``s from client
    requests (Redis 7 counts both), so the requests are read from MONITOR,
    which tags script-internal commands as coming from 'lua'. A
    commandstats cross-check confirms the count of EVALSHA/EVAL calls.
    """
    peer = server.client()
    peer.ping()  # connected (and its HELLO sent) before MONITOR starts
    marker = f"cachu-test-end-{uuid.uuid4().hex}"
    seen = []
    watcher = server.client()
    with watcher.monitor() as mon:

        def listen():
            while True:
                cmd = mon.next_command()
                if marker in cmd["command"]:
                    return
                if cmd.get("client_type") == "lua":
                    continue
                seen.append(cmd["command"].split(" ", 1)[0].upper())

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        peer.config_resetstat()
        reads_before = peer.info("stats")["total_reads_processed"]
        out = {"commands": seen}
        yield out
        # Each request arrives in one read (pipelined commands too); the
        # second INFO's own read is counted in its answer.
        out["round_trips"] = peer.info("stats")["total_reads_processed"] - reads_before - 1
        stats = peer.info("commandstats")
        peer.echo(marker)
        t.join(10)
        assert not t.is_alive()
    watcher.close()
    peer.close()
    # The test's own bookkeeping (MONITOR does not show admin commands
    # such as CONFIG; INFO it does).
    seen[:] = [c for c in seen if c not in ("CONFIG", "INFO")]
    scripts = sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))
    out["scripts_by_commandstats"] = scripts
    assert scripts == sum(c in ("EVALSHA", "EVAL") for c in seen), (stats, seen)

"""The reference's Redis layout (COMPAT.md), written and read directly with
the tests' raw redis-py client, the peer that plays pure-Python cachu 0.2.7:

    value = struct.pack('d', created_at) + pickle.dumps(result), via SETEX
    lock  = SET lock:{mangled key} <token> NX EX int(lock_timeout)
"""

import pickle
import struct
import time


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

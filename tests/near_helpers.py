"""What the near-cache tests share: counting the commands a server ran,
the bytes cachu stores for a value, a bounded poll, and a function whose
results (and runs) the test controls."""

from __future__ import annotations

import pickle
import struct
import time

import pytest

#: Longest wait for anything asynchronous (tracking coming up, a push).
BOUND = 15.0


# What the servers' peers send on their own, whoever reads: sentinels PING
# and PUBLISH their hello to a master every second or two, a replica
# acknowledges its offset (REPLCONF ACK) every second; INFO is the count's
# own question. A read of ours would send none of them.
BACKGROUND = {"cmdstat_info", "cmdstat_ping", "cmdstat_publish", "cmdstat_replconf"}


def commands(*clients) -> int:
    """Commands the servers ran so far, minus their peers' background ones."""
    total = 0
    for c in clients:
        stats = c.info("commandstats")
        total += sum(v["calls"] for k, v in stats.items() if k not in BACKGROUND)
    return total


def stored(value, created_at=None) -> bytes:
    """The bytes cachu stores for ``value``: created_at, then the pickle."""
    return struct.pack("d", time.time() if created_at is None else created_at) + pickle.dumps(value)


def poll(fn, what: str, bound: float = BOUND):
    """Call ``fn`` until it returns something truthy; fail after ``bound`` s."""
    deadline = time.monotonic() + bound
    while True:
        out = fn()
        if out:
            return out
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {bound}s waiting for {what}")
        time.sleep(0.005)


class Source:
    """What a function returns, which the test controls: ``value[x]``; and
    how often it ran."""

    def __init__(self):
        self.value = {}
        self.runs = 0

    def __call__(self, x):
        self.runs += 1
        return {"x": x, "v": self.value.get(x, 0)}

"""The longest pause a sweep of expired entries adds to a write, at a million
entries.

    python bench/sweep_pause.py [--entries N]

Stores N entries with a 1-second TTL, waits for them to expire, then times
each of the writes that carry the sweep pass (one shard of the 32 per write):
the slowest of them is the pause a caller can meet. Beside it: the slowest of
as many writes while no sweep is due, and how many entries were swept.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args(argv)

    import cachu

    cachu.configure(memory_sweep_interval=3.0, package="sweep_pause")
    b = cachu.get_backend("memory", "sweep_pause", ttl=1)
    for i in range(args.entries):
        b.set(f"k{i}", {"id": i, "name": f"user{i}"}, 1)
    filled = time.monotonic()

    def timed_writes(tag: str, n: int) -> list[float]:
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            b.set(f"{tag}{i}", i, 300)
            out.append(time.perf_counter() - t0)
        return out

    quiet = timed_writes("quiet", 64)  # the entries are not expired yet
    # Past the TTL and the sweep interval, but before the background thread's
    # next look (it wakes at most once a second): the writes carry the pass.
    while time.monotonic() - filled < 3.05:
        time.sleep(0.01)
    sweeping = timed_writes("sweep", 64)
    print(f"entries: {args.entries:,}, swept by the writes: {b.expired_swept:,}")
    print(f"slowest write while no sweep is due: {max(quiet) * 1e6:,.0f} us")
    print(f"slowest write carrying a sweep slice: {max(sweeping) * 1e6:,.0f} us")
    print(f"median write carrying a sweep slice: {sorted(sweeping)[32] * 1e6:,.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())

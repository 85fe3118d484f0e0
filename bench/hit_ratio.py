"""Hit ratios of bounded caches on seeded synthetic traces, and the memory
that a million small entries hold.

    python bench/hit_ratio.py                 # the three traces and the RSS table
    python bench/hit_ratio.py --quick         # shorter traces, RSS of 100k entries
    python bench/hit_ratio.py --json out.json

Every cache gets the same capacity (2,000 entries) and sees the same trace,
one access at a time: a lookup, and on a miss a store. "Belady" is the
optimum an offline policy that knows the future reaches (it evicts the entry
used again furthest ahead): the ceiling for any policy.

Traces (seed 1):
- zipf: 100k keys, Zipf alpha 0.99 (a few keys take most accesses);
- zipf + scans: the same, with a scan of 5,000 never-seen keys every 50,000
  accesses (a batch job walking a table through the cache);
- loop: keys 0..2,999 over and over (1.5x the capacity).

SIEVE and S3-FIFO, the other policies issue 10 names, are simulated here in
Python (same traces, same capacity, entry counts only) to choose between them
and ours by measurement; see ``sieve`` and ``s3_fifo``.

The RSS table runs each library in a fresh process and stores a million
entries ``f"k{i}" -> {"id": i, "name": f"user{i}"}`` in an unbounded cache.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import heapq
import itertools
import json
import os
import random
import subprocess
import sys
import textwrap

CAPACITY = 2000
SEED = 1


# -- traces ------------------------------------------------------------------


def zipf_sampler(rng: random.Random, nkeys: int, alpha: float):
    weights = [1.0 / (rank**alpha) for rank in range(1, nkeys + 1)]
    cdf = list(itertools.accumulate(weights))
    total = cdf[-1]
    # A random permutation, so that hot keys are not simply the small numbers.
    names = list(range(nkeys))
    rng.shuffle(names)

    def sample() -> int:
        return names[bisect.bisect_left(cdf, rng.random() * total)]

    return sample


def zipf_trace(n: int) -> list[str]:
    rng = random.Random(SEED)
    sample = zipf_sampler(rng, 100_000, 0.99)
    return [f"k{sample()}" for _ in range(n)]


def zipf_scan_trace(n: int) -> list[str]:
    rng = random.Random(SEED)
    sample = zipf_sampler(rng, 100_000, 0.99)
    out: list[str] = []
    scan = itertools.count()
    while len(out) < n:
        out.extend(f"k{sample()}" for _ in range(45_000))
        out.extend(f"scan{next(scan)}" for _ in range(5_000))
    return out[:n]


def loop_trace(n: int) -> list[str]:
    size = CAPACITY * 3 // 2
    return [f"k{i % size}" for i in range(n)]


# -- the optimum -------------------------------------------------------------


def belady(trace: list[str], capacity: int) -> float:
    """Hits of the offline optimum (MIN): on a miss with a full cache, evict
    the entry whose next use is furthest away."""
    never = len(trace)
    next_use = [never] * len(trace)
    seen: dict[str, int] = {}
    for i in range(len(trace) - 1, -1, -1):
        next_use[i] = seen.get(trace[i], never)
        seen[trace[i]] = i
    cached: dict[str, int] = {}  # key -> its next use
    heap: list[tuple[int, str]] = []  # (-next use, key), stale rows skipped
    hits = 0
    for i, key in enumerate(trace):
        if key in cached:
            hits += 1
        elif len(cached) >= capacity:
            while True:
                neg, victim = heapq.heappop(heap)
                if cached.get(victim) == -neg:
                    del cached[victim]
                    break
        cached[key] = next_use[i]
        heapq.heappush(heap, (-next_use[i], key))
    return hits / len(trace)


# -- the caches --------------------------------------------------------------


def ours(capacity: int):
    from cachu.backends import NO_VALUE, Backend

    b = Backend("memory", maxsize=capacity)

    def access(key: str) -> bool:
        if b.get(key) is NO_VALUE:
            b.set(key, 1, 3600)
            return False
        return True

    return access


def moka(policy: str):
    def make(capacity: int):
        import moka_py

        m = moka_py.Moka(capacity, policy=policy)
        missing = object()

        def access(key: str) -> bool:
            if m.get(key, missing) is missing:
                m.set(key, 1)
                return False
            return True

        return access

    return make


def cachebox_lru(capacity: int):
    import cachebox

    c = cachebox.LRUCache(capacity)
    missing = object()

    def access(key: str) -> bool:
        if c.get(key, missing) is missing:
            c.insert(key, 1)
            return False
        return True

    return access


# -- simulated policies (to pick ours by measurement) ----------------------


def sieve(capacity: int):
    """SIEVE (Zhang et al., NSDI'24): one FIFO queue, a visited bit per
    entry, and a hand that walks from the oldest entry towards the newest,
    clearing visited bits, and evicts the first unvisited entry it meets
    (staying where it stopped); new entries enter at the newest end."""
    visited: dict[str, bool] = {}
    newer: dict[str, str | None] = {}  # towards the newest end
    older: dict[str, str | None] = {}
    ends: dict[str, str | None] = {"newest": None, "oldest": None, "hand": None}

    def unlink(key: str) -> None:
        o, n = older.pop(key), newer.pop(key)
        if o is None:
            ends["oldest"] = n
        else:
            newer[o] = n
        if n is None:
            ends["newest"] = o
        else:
            older[n] = o
        del visited[key]

    def access(key: str) -> bool:
        if key in visited:
            visited[key] = True
            return True
        if len(visited) >= capacity:
            h = ends["hand"] or ends["oldest"]
            assert h is not None
            while visited[h]:
                visited[h] = False
                h = newer[h] or ends["oldest"]
                assert h is not None
            ends["hand"] = newer[h]
            unlink(h)
        visited[key] = False
        older[key], newer[key] = ends["newest"], None
        if ends["newest"] is not None:
            newer[ends["newest"]] = key
        ends["newest"] = key
        if ends["oldest"] is None:
            ends["oldest"] = key
        return False

    return access


def s3_fifo(capacity: int):
    """S3-FIFO (Yang et al., SOSP'23): a small FIFO (10% of the entries)
    that new keys enter, a main FIFO (90%), and a ghost FIFO of keys evicted
    from the small one (as many as main holds). A hit bumps a 2-bit count.
    The small queue's oldest entry moves to main if it was hit, else leaves
    (its key goes to the ghost queue); main's oldest entry goes round again
    with its count less one while the count is not 0. A key found in the
    ghost queue enters main directly."""
    small_cap = max(1, capacity // 10)
    main_cap = capacity - small_cap
    freq: dict[str, int] = {}
    small: collections.deque[str] = collections.deque()
    main: collections.deque[str] = collections.deque()
    ghost: collections.OrderedDict[str, None] = collections.OrderedDict()

    def evict_main() -> None:
        while main:
            k = main.popleft()
            if freq[k] > 0:
                freq[k] -= 1
                main.append(k)
            else:
                del freq[k]
                return

    def evict_small() -> None:
        while small:
            k = small.popleft()
            if freq[k] > 0:
                freq[k] = 0
                main.append(k)
                if len(main) > main_cap:
                    evict_main()
            else:
                del freq[k]
                ghost[k] = None
                if len(ghost) > main_cap:
                    ghost.popitem(last=False)
                return

    def access(key: str) -> bool:
        if key in freq:
            freq[key] = min(freq[key] + 1, 3)
            return True
        while len(freq) >= capacity:
            if len(small) >= small_cap:
                evict_small()
            else:
                evict_main()
        freq[key] = 0
        if key in ghost:
            del ghost[key]
            main.append(key)
        else:
            small.append(key)
        return False

    return access


CACHES = {
    "ours (W-TinyLFU)": ours,
    "SIEVE (simulated)": sieve,
    "S3-FIFO (simulated)": s3_fifo,
    "moka-py tiny_lfu": moka("tiny_lfu"),
    "moka-py lru": moka("lru"),
    "cachebox LRUCache": cachebox_lru,
}


def hit_ratio(make, trace: list[str]) -> float:
    access = make(CAPACITY)
    hits = 0
    for key in trace:
        hits += access(key)
    return hits / len(trace)


# -- memory held ---------------------------------------------------------------

RSS_CODE = {
    "ours": """
        import cachu
        b = cachu.get_backend("memory", "rss_probe", ttl=3600)
        def put(k, v):
            b.set(k, v, 3600)
    """,
    "cachebox": """
        import cachebox
        c = cachebox.Cache(0)
        def put(k, v):
            c[k] = v
    """,
    "moka-py": """
        import moka_py
        m = moka_py.Moka(4_000_000)
        def put(k, v):
            m.set(k, v)
    """,
}

RSS_TAIL = """
    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    import gc
    gc.collect()
    before = rss()
    for i in range(N):
        put(f"k{i}", {"id": i, "name": f"user{i}"})
    gc.collect()
    print(rss() - before)
"""


def rss_of(name: str, n: int) -> int | None:
    code = textwrap.dedent(RSS_CODE[name]) + textwrap.dedent(RSS_TAIL).replace("N", str(n))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        print(f"  {name}: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return int(r.stdout.split()[-1])


# -- main ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter traces, fewer RSS entries")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--no-rss", action="store_true", help="skip the RSS table")
    ap.add_argument("--no-install", action="store_true", help="do not pip-install missing peers")
    args = ap.parse_args(argv)
    if not args.no_install:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import run

        run.ensure_peers(False)

    n = 200_000 if args.quick else 1_000_000
    traces = {
        "zipf": zipf_trace(n),
        "zipf + scans": zipf_scan_trace(n),
        "loop": loop_trace(n // 2),
    }
    results: dict[str, dict[str, float | None]] = {}
    for tname, trace in traces.items():
        row: dict[str, float | None] = {"Belady (optimum)": belady(trace, CAPACITY)}
        for cname, make in CACHES.items():
            try:
                row[cname] = hit_ratio(make, trace)
            except ImportError as e:
                print(f"  {cname}: {e}", file=sys.stderr)
                row[cname] = None
        results[tname] = row
        print(f"  {tname}: done", file=sys.stderr)

    names = ["Belady (optimum)", *CACHES]
    print(f"\nhit ratio, capacity {CAPACITY:,}, {n:,} accesses (loop: {n // 2:,})\n")
    print(f"| trace | {' | '.join(names)} |")
    print(f"| --- |{' ---: |' * len(names)}")
    for tname, row in results.items():
        cells = ["n/a" if row[c] is None else f"{row[c]:.3f}" for c in names]
        print(f"| {tname} | {' | '.join(cells)} |")

    print("\ntargets:")
    for tname, row in results.items():
        mine = row["ours (W-TinyLFU)"]
        best = max(
            (v for k, v in row.items() if k.startswith("moka-py") and v is not None),
            default=None,
        )
        if mine is None or best is None:
            status, detail = "n/a", "missing figure"
        else:
            status = "PASS" if mine >= best - 1e-9 else "FAIL"
            detail = f"ours {mine:.3f} vs moka-py's best {best:.3f}"
        print(f"  {status}  {tname}: hit ratio >= moka-py's best  ({detail})")

    rss: dict[str, int | None] = {}
    if not args.no_rss:
        entries = 100_000 if args.quick else 1_000_000
        for name in RSS_CODE:
            rss[name] = rss_of(name, entries)
        print(f"\nmemory held by {entries:,} entries of a small dict (RSS growth)\n")
        print("| library | MB | bytes per entry |")
        print("| --- | ---: | ---: |")
        for name, v in rss.items():
            cells = ("n/a", "n/a") if v is None else (f"{v / 1e6:.0f}", f"{v / entries:.0f}")
            print(f"| {name} | {cells[0]} | {cells[1]} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"hit_ratio": results, "rss": rss}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

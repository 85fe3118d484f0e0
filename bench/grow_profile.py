"""The growing-cache miss + store of ``run.py`` on its own, for a profiler.

    python bench/grow_profile.py [--warm N] [--calls N] [--chunk N] [--pause MS]

Makes the bench's function (``@cache(ttl=300, backend="memory")`` over
``user``), calls it for ``--warm`` fresh integers untimed, then for
``--calls`` more, timed in chunks of ``--chunk`` calls, and prints the
fastest and the median chunk in ns per call (the bench reports the fastest of
its repeats). Runs under the reference 0.2.7 too (``bench/.venv-ref``).

Instructions per call, repeatable on a busy machine: run it under
``valgrind --tool=callgrind`` with ``--calls N`` and with ``--calls 2N``
(same ``--warm``, ``PYTHONHASHSEED=0``); the difference of the two totals
over N.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time


def user(x):
    return {"id": x, "name": f"user{x}", "score": x * 1.5}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warm", type=int, default=200_000, help="untimed fresh calls first")
    ap.add_argument("--calls", type=int, default=600_000, help="timed fresh calls")
    ap.add_argument("--chunk", type=int, default=30_000, help="calls per timed chunk")
    ap.add_argument(
        "--pollute",
        type=int,
        default=0,
        metavar="MB",
        help="rewrite this many MB between chunks, as the bench's other workers evict our caches",
    )
    ap.add_argument(
        "--pause",
        type=float,
        default=0,
        metavar="MS",
        help="sleep this long between chunks, as a worker of the bench waits while the others "
        "run their repeats (with --chunk 10000, the bench's repeat, it accounts for part of the "
        "difference between this script's figure and the bench's)",
    )
    args = ap.parse_args()

    import cachu

    def bench_mem_grow(x):
        return user(x)

    fn = cachu.cache(ttl=300, backend="memory")(bench_mem_grow)
    nxt = 10_000_000
    for x in range(nxt, nxt + args.warm):
        fn(x)
    nxt += args.warm
    gc.disable()
    chunks = []
    done = 0
    junk = bytearray(args.pollute << 20)
    while done < args.calls:
        if junk:
            junk[:] = bytes(len(junk))
        if args.pause:
            time.sleep(args.pause / 1000)
        n = min(args.chunk, args.calls - done)
        t0 = time.perf_counter_ns()
        for x in range(nxt, nxt + n):
            fn(x)
        chunks.append((time.perf_counter_ns() - t0) / n)
        nxt += n
        done += n
    print(
        f"entries {args.warm + args.calls:,}: min {min(chunks):,.0f} ns, "
        f"median {statistics.median(chunks):,.0f} ns per call ({len(chunks)} chunks)",
        flush=True,
    )
    # Skip the teardown (dropping every entry), which a profile would count.
    os._exit(0)


if __name__ == "__main__":
    main()

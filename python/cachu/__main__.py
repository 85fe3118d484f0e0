"""`python -m cachu`: a short demo of the installed package.

Caches one function on the default backend (memory, unless configured
otherwise), then on the memory and file backends, and prints what each call
cost and what the cache saw.
"""

from __future__ import annotations

import tempfile
import time

import cachu


def _timed(fn, *args):
    t = time.perf_counter_ns()
    value = fn(*args)
    return value, (time.perf_counter_ns() - t) / 1000


def _show(title: str, fn) -> None:
    print(f"\n{title}")
    first, us = _timed(fn, 42)
    print(f"  first call  (miss) {us:10.1f} µs -> {first}")
    again, us = _timed(fn, 42)
    print(f"  second call (hit)  {us:10.1f} µs -> {again}")
    n = 20_000
    t = time.perf_counter_ns()
    for _ in range(n):
        fn(42)
    print(f"  {n} more hits: {(time.perf_counter_ns() - t) / n:.0f} ns per call")
    info = cachu.cache_info(fn)
    print(f"  cache_info: hits={info.hits} misses={info.misses} currsize={info.currsize}")


def main() -> None:
    print(f"cachu {cachu.__version__}")

    def slow_square(x: int) -> dict:
        time.sleep(0.05)  # stands in for a database or an API
        return {"x": x, "square": x * x}

    _show("default backend (" + cachu.get_config().backend + ")", cachu.cache(ttl=300)(slow_square))
    _show("memory backend", cachu.cache(ttl=60, backend="memory")(slow_square))
    with tempfile.TemporaryDirectory() as d:
        cachu.configure(file_dir=d)
        fn = cachu.cache(ttl=3600, backend="file")(slow_square)
        _show(f"file backend (SQLite in {d})", fn)
        print("\ncache_clear() removed", cachu.cache_clear(), "entries")
        cachu.get_backend("file", ttl=3600).close()


if __name__ == "__main__":
    main()

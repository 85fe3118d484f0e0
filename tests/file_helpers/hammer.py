"""One process of the many-process file backend test.

Usage: ``hammer.py FILE_DIR PROC START DURATION OUT_JSON``

Runs 4 threads from wall-clock time START for DURATION seconds against the
file backend of package ``hammer`` in FILE_DIR, mixing reads, writes,
deletes, clears and short-TTL entries, and writes a JSON report to OUT_JSON:
``{"errors": [...], "ops": n, "private": {key: value or null}}``.

Private keys (``priv:p{PROC}:t{T}:k{I}``) are written and deleted only by
their own thread, and no clear touches them (clears use patterns and tags
that private keys never match), so every read of one must return exactly
the last value its thread wrote (or a miss after its last delete).
"private" holds that last acknowledged state of each private key at the end.
"""

import json
import random
import sys
import threading
import time
import traceback

import cachu
from cachu.backends import NO_VALUE

PKG = "hammer"
THREADS = 4
PRIVATE_KEYS = 25
SHARED_KEYS = 40
MAX_ERRORS = 50


def main():
    file_dir, proc, start, duration, out = sys.argv[1:6]
    proc = int(proc)
    start = float(start)
    deadline = start + float(duration)

    cachu.configure(file_dir=file_dir, package=PKG)
    long_b = cachu.get_backend("file", package=PKG, ttl=300)
    short_b = cachu.get_backend("file", package=PKG, ttl=1)

    @cachu.cache(ttl=300, backend="file", tag="shared", package=PKG)
    def shared_fn(n):
        return {"n": n, "by": proc}

    @cachu.cache(ttl=1, backend="file", package=PKG)
    def short_fn(n):
        return ("short", n)

    errors = []
    ops = [0] * THREADS
    private_state = {}
    lock = threading.Lock()

    def error(msg):
        with lock:
            if len(errors) < MAX_ERRORS:
                errors.append(msg)

    def worker(t):
        rng = random.Random(proc * 1000 + t)
        expected = {}  # key -> last acknowledged value, or NO_VALUE after a delete
        seq = 0

        def pkey(i):
            return f"priv:p{proc}:t{t}:k{i}"

        def check_private(i, where):
            key = pkey(i)
            got = long_b.get(key)
            want = expected.get(key, NO_VALUE)
            if want is NO_VALUE:
                if got is not NO_VALUE:
                    error(f"{where}: {key} should be missing, read {got!r}")
            elif got is NO_VALUE or got != want:
                error(f"{where}: {key} should be {want!r}, read {got!r}")

        while time.time() < start:
            time.sleep(0.001)
        while time.time() < deadline:
            r = rng.random()
            try:
                if r < 0.25:  # private write, unique value
                    i = rng.randrange(PRIVATE_KEYS)
                    seq += 1
                    value = [proc, t, i, seq]
                    long_b.set(pkey(i), value, 300)
                    expected[pkey(i)] = value
                elif r < 0.40:  # private read
                    check_private(rng.randrange(PRIVATE_KEYS), "read")
                elif r < 0.44:  # private delete
                    i = rng.randrange(PRIVATE_KEYS)
                    long_b.delete(pkey(i))
                    expected[pkey(i)] = NO_VALUE
                elif r < 0.54:  # shared raw keys, tagged so that tag clears take them
                    n = rng.randrange(SHARED_KEYS)
                    key = f"raw|shared|n={n}"
                    op = rng.random()
                    if op < 0.5:
                        long_b.set(key, [proc, n], 300)
                    elif op < 0.9:
                        got = long_b.get(key)
                        if got is not NO_VALUE and (not isinstance(got, list) or got[1] != n):
                            error(f"shared read {key}: {got!r}")
                    else:
                        long_b.delete(key)
                elif r < 0.66:  # decorated, shared between processes
                    n = rng.randrange(SHARED_KEYS)
                    got = shared_fn(n)
                    if not isinstance(got, dict) or got.get("n") != n:
                        error(f"shared_fn({n}) returned {got!r}")
                elif r < 0.69:  # clears that never match private keys
                    op = rng.random()
                    if op < 0.4:
                        long_b.clear("*|shared|*")
                    elif op < 0.7:
                        cachu.cache_clear(tag="shared", backend="file", ttl=300, package=PKG)
                    else:
                        short_b.clear()
                elif r < 0.80:  # short-TTL entries that expire during the run
                    n = rng.randrange(SHARED_KEYS)
                    key = f"short:{n}"
                    if rng.random() < 0.5:
                        short_b.set(key, n, 1)
                    else:
                        got = short_b.get(key)
                        if got is not NO_VALUE and got != n:
                            error(f"short read {key}: {got!r}")
                elif r < 0.92:  # decorated, 1 s TTL
                    n = rng.randrange(SHARED_KEYS)
                    got = short_fn(n)
                    if got != ("short", n):
                        error(f"short_fn({n}) returned {got!r}")
                else:  # listing and counting
                    if rng.random() < 0.5:
                        mine = list(long_b.keys(f"priv:p{proc}:t{t}:*"))
                        live = {k for k, v in expected.items() if v is not NO_VALUE}
                        if set(mine) != live:
                            error(f"keys: {sorted(set(mine) ^ live)} differ")
                    else:
                        n = long_b.count("*|shared|*")
                        if not isinstance(n, int) or n < 0:
                            error(f"count returned {n!r}")
                ops[t] += 1
            except Exception:
                error(traceback.format_exc())

        for i in range(PRIVATE_KEYS):
            try:
                check_private(i, "final")
            except Exception:
                error(traceback.format_exc())
        with lock:
            for key, value in expected.items():
                private_state[key] = None if value is NO_VALUE else value

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()

    with open(out, "w") as f:
        json.dump({"errors": errors, "ops": sum(ops), "private": private_state}, f)


if __name__ == "__main__":
    main()

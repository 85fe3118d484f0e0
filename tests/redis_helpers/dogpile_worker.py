"""One process of the distributed dogpile test.

Usage: ``dogpile_worker.py REDIS_URL START THREADS OUT_JSON``

Waits until wall-clock time START, then calls one missing key from THREADS
threads at once. The cached function sleeps 0.5 s and counts its runs with
``INCR dogpile:runs`` through ``cachu.get_redis_client`` (redis-py's client
of the URL: one server, a cluster, or a Sentinel's master; a key cachu never
touches). Writes ``{"results": [...], "errors": [...], "elapsed": [...]}`` to
OUT_JSON.
"""

import json
import os
import sys
import threading
import time
import traceback

import cachu

PKG = "dogpile"


def main():
    url, start, threads, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    cachu.configure(redis_url=url, package=PKG, fail_open=False)
    peer = cachu.get_redis_client(url)

    @cachu.cache(ttl=300, backend="redis", package=PKG)
    def slow_answer(n):
        peer.incr("dogpile:runs")
        time.sleep(0.5)
        return {"n": n, "computed_by": os.getpid()}

    results, errors, elapsed = [], [], []
    lock = threading.Lock()

    def worker():
        delay = start - time.time()
        if delay > 0:
            time.sleep(delay)
        t0 = time.monotonic()
        try:
            value = slow_answer(7)
            with lock:
                results.append(value)
                elapsed.append(time.monotonic() - t0)
        except Exception:
            with lock:
                errors.append(traceback.format_exc())

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    peer.close()
    with open(out, "w") as f:
        json.dump({"results": results, "errors": errors, "elapsed": elapsed}, f)


if __name__ == "__main__":
    main()

"""One process of the dogpile test on a Redis Cluster or Sentinel set.

Usage: ``topology_dogpile_worker.py REDIS_URL START THREADS OUT_JSON``

Waits until wall-clock time START, then calls one missing key from THREADS
threads at once. The cached function sleeps 0.5 s and counts its runs with
``INCR`` on a key of its own through ``cachu.get_redis_client`` (redis-py's
cluster or master client). Writes ``{"results": [...], "errors": [...]}``.
"""

import json
import os
import sys
import threading
import time
import traceback

import cachu

PKG = "topodogpile"
RUNS_KEY = "topodogpile:runs"


def main():
    url, start, threads, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    cachu.configure(redis_url=url, package=PKG, fail_open=False)
    peer = cachu.get_redis_client(url)

    @cachu.cache(ttl=300, backend="redis", package=PKG)
    def slow_answer(n):
        peer.incr(RUNS_KEY)
        time.sleep(0.5)
        return {"n": n, "computed_by": os.getpid()}

    results, errors = [], []
    lock = threading.Lock()

    def worker():
        delay = start - time.time()
        if delay > 0:
            time.sleep(delay)
        try:
            value = slow_answer(7)
            with lock:
                results.append(value)
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
        json.dump({"results": results, "errors": errors}, f)


if __name__ == "__main__":
    main()

"""A process that uses the Redis backend, forks, and uses it on both sides.

Usage: ``fork_after_use.py REDIS_URL``

``fail_open=False``, so a broken connection raises instead of silently
running uncached. Prints one JSON line per side; exits non-zero on failure.
"""

import json
import os
import sys

import cachu

PKG = "forker"


def main():
    url = sys.argv[1]
    cachu.configure(redis_url=url, package=PKG, fail_open=False)
    runs = []

    @cachu.cache(ttl=300, backend="redis", package=PKG)
    def square(n):
        runs.append(n)
        return n * n

    # Parent uses its connections before the fork.
    assert square(3) == 9
    assert square(3) == 9
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child = {
                "side": "child",
                "hit": square(3),  # stored by the parent
                "new": square(4),  # a miss stored by the child
                "again": square(4),
                "runs": runs,
            }
            print(json.dumps(child), flush=True)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    # The parent's pooled connections still work after the child used and
    # left its own: a hit on what the child stored, and a fresh miss.
    parent = {
        "side": "parent",
        "child_status": status,
        "child_value": square(4),
        "new": square(5),
        "runs": runs,
    }
    print(json.dumps(parent), flush=True)


if __name__ == "__main__":
    main()

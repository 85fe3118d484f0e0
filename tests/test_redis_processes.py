"""Processes sharing one real Redis: the distributed dogpile lock, and a
process that forks after using the backend.

The child scripts live in ``tests/redis_helpers/``.
"""

import json
import os
import pickle
import struct
import subprocess
import sys
import time

HELPERS = os.path.join(os.path.dirname(__file__), "redis_helpers")


def test_distributed_dogpile_runs_the_function_once(server, r, tmp_path):
    """4 processes x 8 threads call one missing key at the same moment; the
    function (0.5 s) runs once in total and every caller gets its value."""
    procs, threads = 4, 8
    start = time.time() + 2.0
    outs = [tmp_path / f"out{i}.json" for i in range(procs)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(HELPERS, "dogpile_worker.py"),
                server.url,
                repr(start),
                str(threads),
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    for child in children:
        stdout, stderr = child.communicate(timeout=60)
        assert child.returncode == 0, f"worker failed:\n{stdout}\n{stderr}"
    assert time.time() >= start, "workers finished before the start time: too slow to start"

    reports = [json.loads(out.read_text()) for out in outs]
    errors = [e for rep in reports for e in rep["errors"]]
    assert errors == []
    results = [res for rep in reports for res in rep["results"]]
    assert len(results) == procs * threads
    # One caller computed; the others waited for its value rather than
    # computing their own.
    assert int(r.get("dogpile:runs")) == 1
    assert all(res == results[0] for res in results), results
    assert results[0]["n"] == 7

    raw = r.get("5m:slow_answer|n=7")
    assert pickle.loads(raw[8:]) == results[0]
    assert abs(struct.unpack("d", raw[:8])[0] - time.time()) < 30
    assert list(r.scan_iter(match="lock:*")) == []


def test_fork_after_use(server, r):
    """COMPAT.md: a process forked after using Redis works in the child
    (fresh connections) and the parent's connections keep working."""
    proc = subprocess.run(
        [sys.executable, os.path.join(HELPERS, "fork_after_use.py"), server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    sides = {d["side"]: d for d in lines}
    child, parent = sides["child"], sides["parent"]
    assert child == {"side": "child", "hit": 9, "new": 16, "again": 16, "runs": [3, 4]}
    assert parent == {
        "side": "parent",
        "child_status": 0,
        "child_value": 16,
        "new": 25,
        "runs": [3, 5],
    }
    assert sorted(k.decode() for k in r.scan_iter()) == [
        "5m:square|n=3",
        "5m:square|n=4",
        "5m:square|n=5",
    ]

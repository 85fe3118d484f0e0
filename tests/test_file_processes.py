"""The SQLite file backend shared between processes: entries survive a
restart, and several processes with several threads each can hammer one
cache directory without errors, corruption or lost writes.

This module never opens a database with Python's ``sqlite3`` while cachu
may have it open in the same process (two copies of SQLite in one process
do not see each other's locks); raw checks run before cachu touches a file
or in a child process.
"""

import json
import os
import pickle
import sqlite3
import subprocess
import sys
import textwrap
import time

import cachu
from cachu.backends import NO_VALUE

HELPERS = os.path.join(os.path.dirname(__file__), "file_helpers")


def run_python(code, *args, timeout=60):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"child failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


PERSIST_CHILD = """
    import sys
    import cachu

    file_dir, marker = sys.argv[1], sys.argv[2]
    cachu.configure(file_dir=file_dir, package='persist')

    @cachu.cache(ttl=300, backend='file', package='persist', tag='t')
    def compute(x, scale=2):
        with open(marker, 'a') as f:
            f.write(f'{x}\\n')
        return {'x': x, 'scaled': x * scale, 'items': list(range(x))}

    for x in (3, 4):
        print(repr(compute(x)))
    info = cachu.cache_info(compute)
    print(info.hits, info.misses, info.currsize)
"""


def test_entries_survive_a_restart(tmp_path):
    marker = tmp_path / "calls.txt"
    first = run_python(PERSIST_CHILD, tmp_path, marker)
    assert marker.read_text().split() == ["3", "4"]
    assert first.splitlines()[-1] == "0 2 2"
    assert (tmp_path / "persist_cache5min.db").exists()

    second = run_python(PERSIST_CHILD, tmp_path, marker)
    assert marker.read_text().split() == ["3", "4"]  # not called again
    assert second.splitlines()[:2] == first.splitlines()[:2]
    assert second.splitlines()[-1] == "2 0 2"


def test_restart_after_writes_through_every_api(tmp_path):
    """What one process stored with .set, cache_set and the backend object,
    and what it deleted, is what the next process sees."""
    run_python(
        """
        import sys
        import cachu

        cachu.configure(file_dir=sys.argv[1], package='persist')
        b = cachu.get_backend('file', package='persist', ttl=7200)
        b.set('raw:1', {'raw': 1}, 7200)
        b.set('raw:2', {'raw': 2}, 7200)
        b.delete('raw:2')

        @cachu.cache(ttl=7200, backend='file', package='persist')
        def f(x):
            raise AssertionError('not called here')

        f.set('via helper', x=1)
        cachu.cache_set(f, 'via cache_set', x=2)
        cachu.cache_set(f, 'deleted', x=3)
        cachu.cache_delete(f, x=3)
        """,
        tmp_path,
    )
    path = tmp_path / "persist_cache2hour.db"
    conn = sqlite3.connect(str(path))
    try:
        rows = dict(conn.execute("SELECT key, value FROM cache"))
    finally:
        conn.close()
    assert {k: pickle.loads(v) for k, v in rows.items()} == {
        "raw:1": {"raw": 1},
        "2h:f|x=1": "via helper",
        "2h:f|x=2": "via cache_set",
    }
    out = run_python(
        """
        import sys
        import cachu

        cachu.configure(file_dir=sys.argv[1], package='persist')
        b = cachu.get_backend('file', package='persist', ttl=7200)

        @cachu.cache(ttl=7200, backend='file', package='persist')
        def f(x):
            return 'computed'

        print(repr([b.get('raw:1'), b.get('raw:2') is cachu.backends.NO_VALUE,
                    f(1), f(2), f(3), sorted(b.keys())]))
        """,
        tmp_path,
    )
    assert out.strip() == repr(
        [
            {"raw": 1},
            True,
            "via helper",
            "via cache_set",
            "computed",
            ["2h:f|x=1", "2h:f|x=2", "2h:f|x=3", "raw:1"],
        ]
    )


def test_many_processes_and_threads(tmp_path):
    procs = 4
    duration = 3.5
    start = time.time() + 1.5  # let every child import cachu first
    outs = [tmp_path / f"out{p}.json" for p in range(procs)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                os.path.join(HELPERS, "hammer.py"),
                str(tmp_path),
                str(p),
                repr(start),
                str(duration),
                str(outs[p]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(procs)
    ]
    results = []
    try:
        for child in children:
            stdout, stderr = child.communicate(timeout=60)
            results.append((child.returncode, stdout, stderr))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    for p, (rc, stdout, stderr) in enumerate(results):
        assert rc == 0, f"process {p} exited with {rc}:\n{stdout}\n{stderr}"
    reports = [json.loads(out.read_text()) for out in outs]
    for p, report in enumerate(reports):
        assert report["errors"] == [], f"process {p}:\n" + "\n".join(report["errors"][:10])
        assert report["ops"] > 100, f"process {p} did only {report['ops']} operations"

    names = sorted(p.name for p in tmp_path.iterdir())
    assert not [n for n in names if ".corrupt-" in n], names
    dbs = [n for n in names if n.endswith(".db")]
    assert dbs == ["hammer_cache1sec.db", "hammer_cache5min.db"]

    # Raw checks first, while this process has no cachu connection open.
    private = {}
    for report in reports:
        private.update(report["private"])
    assert private
    for name in dbs:
        conn = sqlite3.connect(str(tmp_path / name))
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], name
            if name == "hammer_cache5min.db":
                rows = dict(conn.execute("SELECT key, value FROM cache WHERE key GLOB 'priv:*'"))
        finally:
            conn.close()
    for key, want in private.items():
        if want is None:
            assert key not in rows, f"{key} was deleted last but is present"
        else:
            assert key in rows, f"{key} lost its last write {want!r}"
            assert pickle.loads(rows[key]) == want, key
    assert set(rows) <= set(private)

    # And this process reads the same through cachu.
    cachu.configure(file_dir=str(tmp_path), package="hammer")
    b = cachu.get_backend("file", package="hammer", ttl=300)
    for key, want in private.items():
        got = b.get(key)
        if want is None:
            assert got is NO_VALUE, key
        else:
            assert got == want, key

"""Run SQL on cache database files for the tests, from a separate process.

Two copies of SQLite in one process (Python's ``sqlite3`` and the one built
into cachu's engine) do not see each other's POSIX locks, so the tests never
open a database that cachu may have open in their own process: they send
requests to this process instead.

Protocol: one JSON object per line on stdin,
``{"path": str, "statements": [[sql, params], ...]}``; one JSON line per
request on stdout, ``{"ok": true, "results": [rows, ...]}`` or
``{"ok": false, "error": str}``. ``bytes`` travel as ``{"$b": base64}``.
The connection is opened, committed and closed for every request.
"""

import base64
import json
import sqlite3
import sys


def decode(value):
    if isinstance(value, dict) and "$b" in value:
        return base64.b64decode(value["$b"])
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def encode(value):
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value


def handle(request):
    conn = sqlite3.connect(request["path"], timeout=10, isolation_level=None)
    try:
        results = []
        conn.execute("BEGIN IMMEDIATE" if request.get("write") else "BEGIN")
        for sql, params in request["statements"]:
            results.append([encode(row) for row in conn.execute(sql, decode(params)).fetchall()])
        conn.execute("COMMIT")
        return results
    finally:
        conn.close()


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = {"ok": True, "results": handle(json.loads(line))}
        except Exception as e:
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

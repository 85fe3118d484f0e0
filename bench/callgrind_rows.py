"""Instructions per call of a few benchmark rows, counted by callgrind.

    python bench/callgrind_rows.py [--rows memory] [--calls N]

For each row (a scenario of ``run.py`` run by ours), runs the row's case in a
fresh process under ``valgrind --tool=callgrind`` twice: set up, then ``N``
timed calls, and set up, then ``2N``; the difference of the two totals over
``N`` is what one call costs, setup and interpreter start-up cancelling out.
Instruction counts are repeatable on a busy machine where times are not.
``PYTHONHASHSEED=0`` keeps the two runs' hashing alike.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

ROWS = {
    "memory": [
        "memory hit",
        "memory hit, int result",
        "memory hit|ours, bounded",
        "memory miss + store",
        "memory miss + store, growing cache",
    ],
}

CHILD = """
import sys
sys.path.insert(0, {here!r})
import scenarios
env = scenarios.Env("ours")
case = scenarios.CASES[({scenario!r}, {impl!r})](env)
case.setup()
case.run({n})
sys.stdout.flush()
import os
os._exit(0)  # no teardown in the count
"""


# The decorated function's entry point: with --calls-only, only what runs
# inside it is counted (not the timing loop, nor the untimed cache_clear()
# of the 64-key miss rows).
ENTRY = "*cached::vectorcall::call*"


def count(scenario: str, impl: str, n: int, calls_only: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="bounded-callgrind-") as tmp:
        out = os.path.join(tmp, "cg.out")
        code = CHILD.format(here=HERE, scenario=scenario, impl=impl, n=n)
        env = dict(os.environ, PYTHONHASHSEED="0")
        toggle = [f"--toggle-collect={ENTRY}"] if calls_only else []
        r = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *toggle]
            + [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=env,
        )
        m = re.search(r"Collected : (\d+)", r.stderr)
        if r.returncode != 0 or not m:
            raise SystemExit(f"{scenario}/{impl}: callgrind failed:\n{r.stderr[-2000:]}")
        return int(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", default="memory", help="a group of ROWS, or rows separated by ';'")
    ap.add_argument("--calls", type=int, default=20_000, help="N: calls in the shorter run")
    ap.add_argument(
        "--calls-only",
        action="store_true",
        help="count only inside the decorated function (not the loop, nor untimed clears)",
    )
    args = ap.parse_args()
    rows = ROWS.get(args.rows) or args.rows.split(";")
    for row in rows:
        scenario, _, impl = row.partition("|")
        impl = impl or "cachu"
        one = count(scenario, impl, args.calls, args.calls_only)
        two = count(scenario, impl, 2 * args.calls, args.calls_only)
        print(
            f"{scenario} ({impl}): {(two - one) / args.calls:,.0f} instructions per call",
            flush=True,
        )


if __name__ == "__main__":
    main()

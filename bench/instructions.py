"""Instructions per request of ``bench.profile``'s endpoints, counted by valgrind's callgrind:
``python -m bench.instructions MODE [N1 N2]``.

CPU time on the benchmark machine moves with its host's load (docs/BENCHMARKS.md, section 9); the instructions a
request executes do not. Runs ``python -m bench.profile MODE N`` under callgrind for N1 and N2 requests (20 and 100
unless given) and prints (instructions of the second - instructions of the first) / (N2 - N1): what one more request
costs, the start-up, fixtures and warm-up cancelled out. The garbage collector is off while the requests run
(``BENCH_NO_GC``): where it ran fell differently in runs of different lengths. Counts this process only (not
PostgreSQL, Redis or the kernel), and not the collections a build's allocations would cause.
Slow (valgrind runs Python some fifty times slower): about three minutes a mode. To compare two builds, run it in a
checkout of each (``git worktree add``), one after the other.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.profile import API_MODES

_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)", re.M)


def instructions(mode: str, requests: int) -> int:
    """Instructions callgrind counted for the whole of ``bench.profile MODE requests``."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        command += [sys.executable, "-m", "bench.profile", mode, str(requests)]
        # The same dict layouts in both runs; no garbage collection while the requests run (bench.profile).
        env = {"PYTHONHASHSEED": "0", **os.environ, "BENCH_NO_GC": "1"}
        root = Path(__file__).resolve().parent.parent
        finished = subprocess.run(command, cwd=root, env=env, capture_output=True)
        if finished.returncode != 0:
            raise SystemExit(f"bench.profile {mode} {requests} failed:\n{finished.stderr.decode()[-3000:]}")
        found = _TOTAL.search(out.read_bytes())
        if found is None:
            raise SystemExit(f"no total in callgrind's output for {mode} {requests}")
        return int(found.group(1))


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in API_MODES:
        raise SystemExit(f"usage: python -m bench.instructions {{{','.join(API_MODES)}}} [N1 N2]")
    counts = sys.argv[2:]
    if len(counts) not in (0, 2) or not all(count.isascii() and count.isdigit() for count in counts):
        raise SystemExit("N1 and N2: two whole numbers, 0 < N1 < N2")
    first, second = (int(count) for count in counts) if counts else (20, 100)
    if not 0 < first < second:
        raise SystemExit("N1 and N2: two whole numbers, 0 < N1 < N2")
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    per_request = (instructions(mode, second) - instructions(mode, first)) / (second - first)
    print(f"{mode}: {per_request / 1e6:.3f} M instructions per request ({first} and {second} requests under callgrind)")


if __name__ == "__main__":
    main()

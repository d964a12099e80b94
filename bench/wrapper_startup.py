"""Benchmark: what ``import extjob_worker`` adds to a Python job's start.

A Python job pays the interpreter's start, then the wrapper's import, before
its code runs. This measures the import alone, as a job meets it: a fresh
``python -S`` that first imports ``os`` (what the standard ``site`` always
loads; ``site`` itself is left out, since what its ``.pth`` files import
differs from one installation to the next: this machine's preloads typing
and re), with the bytecode cached as after an install, and ``-X
importtime``'s own clock summed over the modules imported by the import
statement (so the interpreter's start-up and the machine's noise between
runs stay out of it); the best of N fresh interpreters. The baseline in the
same run is the floor: the standard modules the wrapper cannot do without
(json, socket, selectors, threading, signal), imported alone the same way.
Target (issue 15): under 12 ms; the original's wrapper took 10-11 ms.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

WRAPPER_DIR = Path(__file__).resolve().parent.parent / "wrappers" / "python"
TARGET_MS = 12.0
FLOOR = "json, socket, selectors, threading, signal"
MARK = "-- the statement --"


def best_import_ms(statement: str, runs: int) -> float:
    """The lowest import time of ``statement``'s modules (top level, cumulative), in ms."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="")  # cached bytecode, as installed
    code = (
        f"import os, sys; sys.path.insert(0, {str(WRAPPER_DIR)!r}); "
        f"sys.stderr.write({MARK!r} + '\\n'); sys.stderr.flush(); {statement}"
    )
    best = float("inf")
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, "-S", "-X", "importtime", "-c", code],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        # each line: "import time: self | cumulative | name"; top-level names are not indented
        lines = err.split(MARK, 1)[1].splitlines()
        total = sum(
            int(line.split("|")[1])
            for line in lines
            if line.startswith("import time:")
            and not line.split("|")[2].startswith("  ")
            and line.split("|")[1].strip().isdigit()
        )
        best = min(best, total / 1000)
    return best


def run(smoke: bool) -> list[str]:
    runs = 3 if smoke else 30
    best_import_ms("import extjob_worker", 1)  # writes the bytecode cache
    wrapper = best_import_ms("import extjob_worker", runs)
    floor = best_import_ms(f"import {FLOOR}", runs)
    verdict = "met" if wrapper < TARGET_MS else "MISSED"
    lines = [
        f"wrapper_startup: import extjob_worker {wrapper:.1f} ms (best of {runs})",
        f"  floor ({FLOOR}): {floor:.1f} ms; the wrapper adds {wrapper - floor:.1f} ms above it",
        f"  target < {TARGET_MS:.0f} ms: {verdict}",
    ]
    if verdict == "MISSED" and not smoke:
        lines[-1] += (
            "; what limits it is the floor: the standard modules it cannot do without"
            if floor >= TARGET_MS
            else "; above the floor it is the module itself: its bytecode and definitions"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(run(smoke="--smoke" in sys.argv)))

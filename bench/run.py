"""Run the benchmarks: ``python bench/run.py [--smoke] [NAME ...]``.

Each benchmark module has ``run(smoke: bool) -> list[str]`` and measures
its own baseline in the same run, so the ratios it prints hold on any
machine. ``--smoke`` runs every one at a small size: a check that they
work (CI runs it), not a measurement.
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(
        p.stem for p in HERE.glob("*.py") if p.stem != "run" and not p.stem.startswith("_")
    )


def main(argv: list[str]) -> int:
    smoke = "--smoke" in argv
    names = [a for a in argv if not a.startswith("--")] or available()
    unknown = set(names) - set(available())
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: {', '.join(available())}")
        return 2
    sys.path.insert(0, str(HERE))
    for name in names:
        start = time.perf_counter()
        for line in importlib.import_module(name).run(smoke=smoke):
            print(line, flush=True)
        print(f"  ({name}: {time.perf_counter() - start:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

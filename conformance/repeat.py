#!/usr/bin/env python3
"""Run the whole suite N times on one fixture and show that the verdicts never change.

    python conformance/repeat.py [-n 20] [--features ...] -- COMMAND ARGS...

Prints one line per run (verdict counts, wall time) and, per case, any
verdict that differed between runs. Exit 0 when every run gave the same
verdict for every case. This is the "no flaky verdicts" evidence; it is run
on demand, not in CI (20 full runs take minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time

from extjob.conformance import Timing, run_cases, select
from extjob.conformance.cli import LEVELS, _features
from extjob.conformance.runner import default_jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs (default: %(default)s)")
    parser.add_argument("--features", type=_features, default=frozenset(LEVELS))
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--jobs", "-j", type=int, default=default_jobs())
    parser.add_argument("fixture", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.fixture[1:] if args.fixture[:1] == ["--"] else args.fixture
    if not command:
        parser.error("no fixture command given (put it after --)")
    verdicts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for run in range(1, args.n + 1):
        started = time.monotonic()
        results = asyncio.run(
            run_cases(select(args.only), command, args.features, Timing.from_env(), args.jobs)
        )
        counts = collections.Counter(r.verdict for r in results)
        for r in results:
            verdicts[r.case_id][r.verdict] += 1
        print(
            f"run {run:2}: {time.monotonic() - started:5.1f}s  "
            + "  ".join(f"{v} {n}" for v, n in sorted(counts.items())),
            flush=True,
        )
        for r in results:
            if r.verdict not in ("pass", "skip"):
                why = [f"{f.requirement}: {f.message} (observed {f.observed})" for f in r.findings]
                print(
                    f"    {r.verdict} {r.case_id}: " + "; ".join(why or r.reason.split("\n")[-2:])
                )
    unsteady = {case: c for case, c in verdicts.items() if len(c) > 1}
    for case, counter in unsteady.items():
        print(f"UNSTEADY {case}: {dict(counter)}")
    print(
        f"{len(verdicts)} cases × {args.n} runs: "
        + ("every verdict the same" if not unsteady else f"{len(unsteady)} case(s) unsteady")
    )
    return 1 if unsteady else 0


if __name__ == "__main__":
    sys.exit(main())

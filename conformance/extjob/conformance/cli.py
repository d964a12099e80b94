"""``extjob conformance``: the command line of the suite."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

from extjob.protocol import FEATURES

from . import coverage, matrix
from .cases import select
from .model import CaseResult, Timing
from .report import FORMATS, passed
from .runner import default_jobs, run_cases

LEVELS = ("core", *FEATURES)
EPILOG = """\
examples:
  extjob conformance --features core,auth,replay -- python my_fixture.py
  extjob conformance report python.json go.json --format html -o matrix.html
exit status: 0 when every case of the claimed features passes, 1 when one
fails, 2 on a usage error. Set EXTJOB_CONFORMANCE_TIME_FACTOR=3 on a slow
machine. The fixture contract is SPEC section 11; see conformance/README.md.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "conformance",
        help="test a wrapper's fixture worker against the spec",
        description="Play the server, run the fixture worker COMMAND in many scenarios and "
        "check every message and timing against protocol/SPEC.md.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--features",
        default="core",
        type=_features,
        help=f"levels the wrapper claims, comma-separated: {','.join(LEVELS)} "
        "(default: core); the cases of the others are skipped",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="CASE",
        help="run only cases whose id starts with CASE, whose topic is CASE "
        "(heartbeat) or that test requirement CASE (HB-2); repeatable",
    )
    parser.add_argument("--format", choices=sorted(FORMATS), default="text")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the report here")
    parser.add_argument(
        "--junit", metavar="FILE", help="also write a JUnit XML report here (for CI dashboards)"
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="also write the JSON report here (for `extjob conformance report`)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=int,
        metavar="MS",
        help="the interval the wrapper really uses, if it ignores the advised "
        "heartbeatIntervalMs (cases take longer)",
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=default_jobs(),
        help="cases run at the same time (default: %(default)s)",
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="print which case tests each SPEC requirement (or why none does) and exit",
    )
    parser.add_argument(
        "fixture",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ARGS",
        help="how to start the fixture worker; or `report A.json B.json ... "
        "[--format html|markdown] [-o FILE]`: several JSON reports side by side",
    )
    parser.set_defaults(func=run)
    return parser


def _features(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(LEVELS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown feature {', '.join(unknown)}; known: {', '.join(LEVELS)}"
        )
    return names


def run(args: argparse.Namespace) -> int:
    if args.fixture[:1] == ["report"]:  # without --: the matrix of several runs
        return matrix.main(args.fixture[1:])
    command = args.fixture[1:] if args.fixture[:1] == ["--"] else args.fixture
    cases = select(args.only)
    if args.coverage:
        sys.stdout.write(coverage.to_markdown(coverage.table()))
        return 0
    if args.list:
        for case in cases:
            print(f"{case.id:<38} {case.feature:<11} {','.join(case.requirements)}")
        return 0
    if not command:
        return _usage("no fixture command given (put it after --)")
    if not cases:
        return _usage(f"no case matches {' '.join(args.only)}")
    if shutil.which(command[0]) is None:
        return _usage(f"cannot run {command[0]!r}: not found or not executable")
    if args.jobs < 1 or (args.heartbeat_interval is not None and args.heartbeat_interval < 10):
        return _usage("--jobs must be ≥ 1 and --heartbeat-interval ≥ 10")
    try:
        timing = Timing.from_env(args.heartbeat_interval)
    except ValueError as exc:
        return _usage(str(exc))
    live = args.format == "text" and sys.stderr.isatty()

    def progress(result: CaseResult) -> None:
        if live:
            print(f"  {result.verdict:<10} {result.case_id}", file=sys.stderr)

    try:
        results = asyncio.run(run_cases(cases, command, args.features, timing, args.jobs, progress))
    except KeyboardInterrupt:  # the workers are killed as their cases unwind
        print("extjob conformance: interrupted", file=sys.stderr)
        return 130
    meta = {
        "suite": "extjob conformance",
        "command": command,
        "features": sorted(args.features, key=LEVELS.index),
        "timeFactor": timing.factor,
        "heartbeatIntervalMs": timing.interval_ms,
        "waivers": timing.waivers,
    }
    report = FORMATS[args.format](results, meta)
    try:
        if args.output:
            _write(args.output, report)
        else:
            sys.stdout.write(report)
        if args.junit:
            _write(args.junit, FORMATS["junit"](results, meta))
        if args.json:
            _write(args.json, FORMATS["json"](results, meta))
    except OSError as exc:
        return _usage(f"cannot write the report: {exc}")
    return 0 if passed(results) else 1


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def _usage(message: str) -> int:
    print(f"extjob conformance: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    """``python -m extjob.conformance``: the suite without the ``extjob`` CLI."""
    parser = argparse.ArgumentParser(prog="extjob")
    add_parser(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))

"""``extjob validate``: check captured message streams against the spec.

Each input is one stream: the worker -> server lines of one attempt, as the
server received them (SPEC section 9). Every line is checked against the
schemas and the stream rules; each problem is reported with its line and
requirement id, and the rest of the stream is still checked.

Schema checks are independent per line, so large inputs fan them out in
batches to worker processes; the stream rules need the order and run here,
on lines the workers found valid.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO

from extjob import reporting
from extjob.protocol import (
    DEFAULT_MAX_LINE_BYTES,
    LineBuffer,
    Message,
    OversizedLine,
    Problem,
    RemoteProtocolError,
    StreamChecker,
    decode,
    message_of,
    parse_line,
)

CHUNK_BYTES = 1 << 20
BATCH_LINES = 4096
GC_THRESHOLD = 100_000  # allocations between two runs of the cyclic collector


@dataclass(frozen=True)
class StreamFinding:
    """A problem at a line of a stream (``line`` None: the stream as a whole)."""

    source: str
    line: int | None
    problem: Problem


@dataclass
class StreamReport:
    source: str
    lines: int = 0
    findings: list[StreamFinding] = field(default_factory=list)


def schema_problems(lines: list[bytes]) -> list[tuple[int, Problem]]:
    """(index, problem) for each line of a batch that does not decode."""
    return decoded(lines)[0]


def decoded(lines: list[bytes]) -> tuple[list[tuple[int, Problem]], list[Message | None]]:
    """The problems of a batch, and its messages (None where a line does not decode)."""
    found = []
    messages: list[Message | None] = []
    for index, line in enumerate(lines):
        try:
            messages.append(decode(line))
        except RemoteProtocolError as exc:
            found.append((index, Problem(exc.requirement, exc.field, exc.detail)))
            messages.append(None)
    return found, messages


# A batch's schema problems (from a worker process, or found here), and its
# messages when decoded here: a worker's would cost more to send back than
# to parse again.
Checked = tuple[list[tuple[int, Problem]], list[Message | None] | None]


class Validator:
    """Checks streams; owns the worker processes (if any) across them."""

    def __init__(self, jobs: int = 1, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        self.jobs = jobs
        self.max_line_bytes = max_line_bytes
        self._pool: Executor | None = None

    def __enter__(self) -> Validator:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool:
            self._pool.shutdown(cancel_futures=True)

    def check(self, source: str, chunks: Iterable[bytes]) -> StreamReport:
        """Check one stream given as byte chunks; never raises for bad input."""
        with _rare_collections():
            return self._check(source, chunks)

    def _check(self, source: str, chunks: Iterable[bytes]) -> StreamReport:
        report = StreamReport(source)
        checker = StreamChecker()
        in_flight: deque[tuple[list[tuple[int, bytes]], Future[Checked]]] = deque()
        for batch in self._batches(chunks, report):
            in_flight.append((batch, self._submit([line for _, line in batch])))
            if len(in_flight) > 2 * self.jobs:
                self._apply(*in_flight.popleft(), checker, report)
        while in_flight:
            self._apply(*in_flight.popleft(), checker, report)
        report.findings += [StreamFinding(source, None, problem) for problem in checker.finish()]
        report.findings.sort(key=lambda f: f.line or 0)
        return report

    def _submit(self, lines: list[bytes]) -> Future[Checked]:
        if self.jobs > 1:
            if self._pool is None:
                context = multiprocessing.get_context("fork")
                self._pool = ProcessPoolExecutor(self.jobs, mp_context=context)
            return self._pool.submit(_problems_only, lines)
        done: Future[Checked] = Future()
        done.set_result(decoded(lines))  # one parse per line: the messages are kept
        return done

    def _batches(
        self, chunks: Iterable[bytes], report: StreamReport
    ) -> Iterator[list[tuple[int, bytes]]]:
        """Numbered non-blank lines in batches; oversized lines are reported here."""
        buffer = LineBuffer(self.max_line_bytes)
        batch: list[tuple[int, bytes]] = []
        for chunk in _with_final_newline(chunks, buffer):
            for line in buffer.feed(chunk):
                report.lines += 1
                if isinstance(line, OversizedLine):
                    limit = f"{line.size} bytes, over the limit of {self.max_line_bytes}"
                    problem = Problem("LIMIT-1", None, f"line of {limit}")
                    report.findings.append(StreamFinding(report.source, report.lines, problem))
                elif line.strip():  # FRAME-3: blank lines are ignored
                    batch.append((report.lines, line))
            if len(batch) >= BATCH_LINES:
                yield batch
                batch = []
        if batch:
            yield batch

    def _apply(
        self,
        batch: list[tuple[int, bytes]],
        schema_result: Future[Checked],
        checker: StreamChecker,
        report: StreamReport,
    ) -> None:
        found, messages = schema_result.result()
        bad = dict(found)
        check, source, findings = checker.check, report.source, report.findings
        for index, (number, line) in enumerate(batch):
            if index in bad:
                problems = [bad[index]]
            else:
                message = messages[index] if messages is not None else None
                if message is None:  # checked in a worker process: parse it again
                    message = message_of(parse_line(line))
                if not (problems := check(message, line)):
                    continue  # the common case, kept cheap
            findings += [StreamFinding(source, number, problem) for problem in problems]


@contextlib.contextmanager
def _rare_collections() -> Iterator[None]:
    """Validation allocates millions of short-lived objects and no cycles: the
    cyclic collector's default (every 700 allocations) would traverse the
    batches in flight again and again (a quarter of the time per line). It
    still runs, a hundred times less often, so memory stays bounded."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GC_THRESHOLD), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _problems_only(lines: list[bytes]) -> Checked:
    return schema_problems(lines), None


def _with_final_newline(chunks: Iterable[bytes], buffer: LineBuffer) -> Iterator[bytes]:
    """The chunks, and a newline if the last line lacks one: it is a line too."""
    yield from chunks
    if buffer.pending:
        yield b"\n"


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK_BYTES):
        yield chunk


def _where(finding: StreamFinding) -> str:
    return f"{finding.source}:{finding.line}" if finding.line else finding.source


def _graded(finding: StreamFinding) -> str:
    """``file:line: error: REQ: ...`` or ``...: warning: ...``, as compilers write them."""
    return f"{_where(finding)}: {finding.problem.severity}: {finding.problem}"


def _count(reports: list[StreamReport], severity: str) -> int:
    return sum(1 for r in reports for f in r.findings if f.problem.severity == severity)


def write_text(reports: list[StreamReport], out: TextIO) -> None:
    for report in reports:
        for finding in report.findings:
            out.write(_graded(finding) + "\n")
    lines = sum(r.lines for r in reports)
    errors, warnings = _count(reports, "error"), _count(reports, "warning")
    streams = sum(1 for r in reports if r.findings)
    if errors or warnings:
        verdict = f"{errors} error(s), {warnings} warning(s) in {streams} stream(s)"
    else:
        verdict = "valid"
    out.write(f"{len(reports)} stream(s), {lines} line(s): {verdict}\n")


def write_json(reports: list[StreamReport], out: TextIO) -> None:
    """One JSON document: every finding with its severity, and the totals."""
    document = {
        "streams": [
            {
                "source": r.source,
                "lines": r.lines,
                "findings": [
                    {
                        "line": f.line,
                        "severity": f.problem.severity,
                        "requirement": f.problem.requirement,
                        "field": f.problem.field,
                        "message": f.problem.message,
                    }
                    for f in r.findings
                ],
            }
            for r in reports
        ],
        "errors": _count(reports, "error"),
        "warnings": _count(reports, "warning"),
    }
    out.write(reporting.to_json(document))


def write_github(reports: list[StreamReport], out: TextIO) -> None:
    """GitHub Actions workflow commands: one annotation per problem, ``::error`` or
    ``::warning`` by its severity."""
    out.write(
        reporting.github(
            reporting.Annotation(
                f.problem.severity, f.problem.requirement, str(f.problem), f.source, f.line
            )
            for r in reports
            for f in r.findings
        )
    )


def write_junit(reports: list[StreamReport], out: TextIO) -> None:
    """One test case per stream: its errors are the failure's text; a stream with
    warnings only passes, its warnings in ``system-out``."""
    suite = reporting.Suite("extjob validate")
    for report in reports:
        case = reporting.TestCase(report.source, "extjob.validate")
        errors = [f for f in report.findings if f.problem.severity == "error"]
        warnings = [f for f in report.findings if f.problem.severity == "warning"]
        if errors:
            details = "\n".join(_graded(f) for f in errors)
            case.failure = (f"{len(errors)} error(s)", errors[0].problem.requirement, details)
        if warnings:
            case.output = "\n".join(_graded(f) for f in warnings)
        suite.cases.append(case)
    out.write(reporting.junit("extjob validate", [suite]))


WRITERS: dict[str, Callable[[list[StreamReport], TextIO], None]] = {
    "text": write_text,
    "json": write_json,
    "github": write_github,
    "junit": write_junit,
}


def run(args: argparse.Namespace) -> int:
    """Exit status: 0 valid (warnings allowed unless ``--strict``), 1 an error found
    (or, with ``--strict``, a warning), 2 a file could not be read."""
    reports, unreadable = [], False
    with Validator(args.jobs or os.cpu_count() or 1, args.max_line) as validator:
        for path in args.files or ["-"]:
            try:
                if path == "-":
                    reports.append(validator.check("<stdin>", _chunks(sys.stdin.buffer)))
                else:
                    with open(path, "rb") as stream:
                        reports.append(validator.check(path, _chunks(stream)))
            except OSError as exc:
                print(f"extjob validate: cannot read {path}: {exc.strerror}", file=sys.stderr)
                unreadable = True
    WRITERS[args.format](reports, sys.stdout)
    if unreadable:
        return 2
    failing = ("error", "warning") if args.strict else ("error",)
    return 1 if any(f.problem.severity in failing for r in reports for f in r.findings) else 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check captured NDJSON message streams against the schemas and stream rules",
        description="Check NDJSON message streams (one attempt per file) against the "
        "JSON Schemas and the stream rules of SPEC.md section 9. A deviation the "
        "spec tells servers to tolerate (LIFE-2: a heartbeat before started) is a "
        "warning. Exit status: 0 valid (warnings allowed), 1 errors found (or "
        "warnings, with --strict), 2 usage error.",
    )
    parser.add_argument(
        "files", nargs="*", metavar="FILE", help="one stream per file; - or none reads stdin"
    )
    parser.add_argument("--format", choices=sorted(WRITERS), default="text")
    parser.add_argument("--strict", action="store_true", help="fail on warnings too")
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="processes for the schema checks (default: one per CPU)",
    )
    parser.add_argument(
        "--max-line",
        type=int,
        default=DEFAULT_MAX_LINE_BYTES,
        metavar="BYTES",
        help="longest line accepted (LIMIT-1; default %(default)s)",
    )
    parser.set_defaults(func=run)

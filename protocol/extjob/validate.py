"""``extjob validate``: check captured message streams against the spec.

Each input is one stream: the worker -> server lines of one attempt, as the
server received them (SPEC section 9). Every line is checked against the
schemas and the stream rules; each problem is reported with its line and
requirement id, and the rest of the stream is still checked.

The lines go in batches. Schema checks are independent per line, so the
batches can fan out to worker processes; a valid batch is checked in a few
native calls, and cut into runs of ordinary messages (``runs``) that the
stream rules, which need the order and are applied here, take a run at a
time. Anything unusual (a bad line, started, hello, the terminal message,
a replay) is checked line by line, by the same rules.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import stat
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, Protocol, TextIO

from extjob import reporting

if TYPE_CHECKING:  # the worker processes' modules are imported when they start
    from concurrent.futures import Executor
from extjob.protocol import (
    DEFAULT_MAX_LINE_BYTES,
    LineBuffer,
    OrdinaryRun,
    OversizedLine,
    Problem,
    RemoteProtocolError,
    StreamChecker,
    decode,
    decode_bodies,
    message_of,
    runs,
)

CHUNK_BYTES = 1 << 20
BATCH_LINES = 4096  # a batch is this many lines, or the lines of CHUNK_BYTES read
RANGE_BYTES = 4 * CHUNK_BYTES  # a longer batch (a long line) goes to a worker through a pipe
SLICE_LINES = 512  # lines decoded at a time: their bodies fit in the CPU's cache
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


class LineBatch(NamedTuple):
    first: int  # the number of its first line
    lines: list[bytes | OversizedLine]
    start: int  # where its first line starts in the stream, in bytes
    end: int  # where the line after its last one starts


# What the schema checks make of a batch: (index, problem) for each line
# that is not a valid message; the batch cut into runs and stretches to check
# line by line (``runs``); and the bodies of the lines in those stretches
# (None where a line is blank, oversized or bad). Small to send back from a
# worker process: a run is a few numbers and its seqs.
Examined = tuple[
    list[tuple[int, Problem]], list[tuple[int, int, OrdinaryRun | None]], dict[int, Any]
]


def examine(lines: Sequence[bytes | OversizedLine]) -> Examined:
    """Check a batch against the schemas: in a few native calls per slice when
    every line is valid (the common case), else line by line, to say why not.
    A slice's bodies are dropped as soon as it is cut into runs, while they
    are still in the CPU's cache."""
    found: list[tuple[int, Problem]] = []
    parts: list[tuple[int, int, OrdinaryRun | None]] = []
    singles: dict[int, Any] = {}
    for offset in range(0, len(lines), SLICE_LINES):
        piece = lines[offset : offset + SLICE_LINES]
        decoded = decode_bodies(piece)  # type: ignore[arg-type]  # an OversizedLine fails it
        if decoded is None:
            problems, bodies = decode_each(piece)
            found += [(offset + index, problem) for index, problem in problems]
            parted = runs(bodies)
        else:
            bodies = decoded.objs
            parted = runs(bodies, decoded.types)
        for start, end, run in parted:
            parts.append((offset + start, offset + end, run))
            if run is None:
                singles.update(
                    zip(range(offset + start, offset + end), bodies[start:end], strict=True)
                )
    return found, parts, singles


def decode_each(
    lines: Sequence[bytes | OversizedLine],
) -> tuple[list[tuple[int, Problem]], list[Any]]:
    """The problems of a batch, line by line, and its bodies (None where a line
    is blank, FRAME-3, oversized, reported where it was read, or bad)."""
    found = []
    bodies: list[Any] = []
    for index, line in enumerate(lines):
        body = None
        if isinstance(line, bytes) and line.strip():
            try:
                body = decode(line).body
            except RemoteProtocolError as exc:
                found.append((index, Problem(exc.requirement, exc.field, exc.detail)))
        bodies.append(body)
    return found, bodies


class _Pending(Protocol):
    def result(self) -> Examined | None: ...


class _Done(NamedTuple):
    """A batch examined here: done already, like a finished future."""

    examined: Examined

    def result(self) -> Examined:
        return self.examined


def _examine_joined(joined: bytes) -> Examined:
    """:func:`examine` in a worker process: the batch comes as one bytes
    object, cheaper to send than a list of lines."""
    return examine(joined.split(b"\n"))


class _File(NamedTuple):
    """The regular file a stream is read from, for worker processes to read
    their batches from themselves: not through a pipe (two copies fewer)."""

    path: str
    device: int
    inode: int


_opened: tuple[_File, int] | None = None  # in a worker process: the file it reads


def _examine_range(file: _File, start: int, end: int, max_line_bytes: int) -> Examined | None:
    """:func:`examine` in a worker process, on the lines it reads from the file
    itself (framed as the parent frames them: the range holds whole lines; the
    last one may lack its newline). None if it cannot read the same file."""
    global _opened
    if _opened is None or _opened[0] != file:
        if _opened is not None:
            os.close(_opened[1])
            _opened = None
        try:
            fd = os.open(file.path, os.O_RDONLY)
        except OSError:
            return None
        found = os.fstat(fd)
        if (found.st_dev, found.st_ino) != (file.device, file.inode):
            os.close(fd)
            return None  # renamed over since: not the file the parent reads
        _opened = (file, fd)
    try:
        data = os.pread(_opened[1], end - start, start)
    except OSError:
        return None
    buffer = LineBuffer(max_line_bytes)
    lines = buffer.feed(data)
    if buffer.pending:
        lines += buffer.feed(b"\n")
    return examine(lines)


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

    def check(
        self, source: str, chunks: Iterable[bytes], stream: BinaryIO | None = None
    ) -> StreamReport:
        """Check one stream given as byte chunks; never raises for bad input.
        ``stream``: the file they are read from, if at hand: worker processes
        then read their batches from it themselves if it is a regular file."""
        file = None
        if stream is not None and self.jobs > 1:
            found = os.fstat(stream.fileno())
            if stat.S_ISREG(found.st_mode) and isinstance(stream.name, str):
                file = _File(os.path.abspath(stream.name), found.st_dev, found.st_ino)
        with _rare_collections():
            return self._check(source, chunks, file)

    def _check(self, source: str, chunks: Iterable[bytes], file: _File | None) -> StreamReport:
        report = StreamReport(source)
        checker = StreamChecker()
        in_flight: deque[tuple[LineBatch, _Pending]] = deque()
        for batch in self._batches(chunks, report):
            in_flight.append((batch, self._submit(batch, file)))
            if len(in_flight) > 2 * self.jobs:
                self._apply(*in_flight.popleft(), checker, report)
        while in_flight:
            self._apply(*in_flight.popleft(), checker, report)
        report.findings += [StreamFinding(source, None, problem) for problem in checker.finish()]
        report.findings.sort(key=lambda f: f.line or 0)
        return report

    def _submit(self, batch: LineBatch, file: _File | None) -> _Pending:
        lines = batch.lines
        if self.jobs > 1:
            if self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                decode_bodies([])  # compile the schemas once, before the fork
                context = multiprocessing.get_context("fork")
                self._pool = ProcessPoolExecutor(self.jobs, mp_context=context)
            if file is not None and batch.end - batch.start <= RANGE_BYTES:
                return self._pool.submit(
                    _examine_range, file, batch.start, batch.end, self.max_line_bytes
                )
            try:
                joined = b"\n".join(lines)  # type: ignore[arg-type]
            except TypeError:  # an oversized line (reported here) goes as a blank one
                joined = b"\n".join(line if isinstance(line, bytes) else b"" for line in lines)
            return self._pool.submit(_examine_joined, joined)
        return _Done(examine(lines))

    def _batches(self, chunks: Iterable[bytes], report: StreamReport) -> Iterator[LineBatch]:
        """The lines (numbered from 1, blank ones too) in batches."""
        buffer = LineBuffer(self.max_line_bytes)
        lines: list[bytes | OversizedLine] = []
        read = start = 0  # bytes: read, and where the batch's first line starts
        for chunk in _with_final_newline(chunks, buffer):
            lines += buffer.feed(chunk)
            read += len(chunk)
            if lines and (len(lines) >= BATCH_LINES or read - start >= CHUNK_BYTES):
                end = read - buffer.pending
                yield LineBatch(report.lines + 1, lines, start, end)
                report.lines += len(lines)
                lines, start = [], end
        if lines:
            yield LineBatch(report.lines + 1, lines, start, read - buffer.pending)
            report.lines += len(lines)

    def _apply(
        self, batch: LineBatch, examined: _Pending, checker: StreamChecker, report: StreamReport
    ) -> None:
        """The stream rules, in order: a whole run at a time where it is
        ordinary, else line by line (``StreamChecker.check``)."""
        lines = batch.lines
        result = examined.result()
        if result is None or (result[1][-1][1] if result[1] else 0) != len(lines):
            result = examine(lines)  # the file is not what was read: check what was
        found, parts, singles = result
        bad = dict(found)
        for start, end, run in parts:
            if run is None:
                self._one_by_one(batch, start, end, bad, singles, checker, report)
            elif not checker.apply_run(run, lines[start:end]):  # type: ignore[arg-type]
                # Not taken whole (a replay, or a rule broken where it begins):
                # its lines, valid where they were examined, are decoded again.
                problems, bodies = decode_each(lines[start:end])
                again = dict(zip(range(start, end), bodies, strict=True))
                bad_again = {start + index: problem for index, problem in problems}
                self._one_by_one(batch, start, end, bad_again, again, checker, report)

    def _one_by_one(
        self,
        batch: LineBatch,
        start: int,
        end: int,
        bad: dict[int, Problem],
        bodies: dict[int, Any],
        checker: StreamChecker,
        report: StreamReport,
    ) -> None:
        for index in range(start, end):
            line = batch.lines[index]
            if index in bad:
                problems = [bad[index]]
            elif isinstance(line, OversizedLine):
                limit = f"{line.size} bytes, over the limit of {self.max_line_bytes}"
                problems = [Problem("LIMIT-1", None, f"line of {limit}")]
            elif (body := bodies[index]) is None:
                continue  # FRAME-3: a blank line is ignored
            else:
                problems = checker.check(message_of(body), line)
            number = batch.first + index
            report.findings += [StreamFinding(report.source, number, p) for p in problems]


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
                        reports.append(validator.check(path, _chunks(stream), stream))
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

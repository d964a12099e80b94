"""The checks every case runs on what it recorded.

Each check is a small function ``check(run) -> findings``. Schema rules are
never restated here: lines are judged by ``extjob.protocol.decode`` when they
arrive and streams by ``StreamChecker``; this module adds what only a live
harness can see: timing, exit status, the negotiation, the process's output.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import pairwise

from extjob.protocol import Message, StreamChecker

from .model import Finding, fail, nonstrict
from .run import Run
from .transcript import Entry

Findings = Iterator[Finding]

#: A worker's clock may differ from ours, but not by this much (ms).
CLOCK_SKEW_MS = 5 * 60 * 1000
#: EXIT-3: exit within this long after the terminal message (acknowledged).
EXIT_AFTER_TERMINAL_MS = 1000


def lines_valid(run: Run) -> Findings:
    """Every line is one valid message (FRAME, MSG, schemas)."""
    seen: dict[str, int] = {}
    for entry in run.transcript.worker_lines():
        if entry.problem is None:
            continue
        seen[entry.problem.requirement] = seen.get(entry.problem.requirement, 0) + 1
        if seen[entry.problem.requirement] <= 3:  # the first few say enough
            yield fail(
                entry.problem.requirement,
                f"invalid line at {entry.t:.3f}s: {entry.problem}",
                "a valid message",
                entry.text,
            )


def job_ids(run: Run) -> Findings:
    """MSG-1: every message names the payload's job."""
    for message in run.messages():
        if message.job_id != run.job_id:
            yield fail("MSG-1", f"{message.type} names another job", run.job_id, message.job_id)
            return


def stream_rules(run: Run) -> Findings:
    """SPEC section 9 over every message of the attempt, in received order."""
    checker = StreamChecker()
    problems = [p for m in run.messages() for p in checker.check(m)] + checker.finish()
    for problem in problems[:5]:
        yield fail(problem.requirement, str(problem))


def timestamps_sane(run: Run) -> Findings:
    """MSG-1: integer milliseconds since the epoch, from the worker's wall clock."""
    now = time.time_ns() // 1_000_000
    for message in run.messages():
        if not run.spawned_wall_ms - CLOCK_SKEW_MS <= message.timestamp <= now + CLOCK_SKEW_MS:
            yield fail(
                "MSG-1",
                f"{message.type} timestamp is not near the wall clock in ms",
                f"about {run.spawned_wall_ms}",
                message.timestamp,
            )
            return


def quiet_stdout(run: Run) -> Findings:
    """FIX-3 / WRAP-5: nothing on standard output."""
    assert run.worker is not None
    out = run.worker.stdout()
    if out:
        yield fail(
            "FIX-3",
            "the fixture wrote to standard output",
            "nothing",
            out[:200].decode(errors="replace"),
        )


def negotiation(run: Run) -> Findings:
    """NEG-3 for a v1 payload; AUTH-2 / NEG-2 on every extended connection."""
    if not run.extended:
        for message in run.messages():
            if message.type == "hello" or message.seq is not None:
                yield fail(
                    "NEG-3",
                    "the payload offered no features, but the worker did not behave as a v1 worker",
                    "no hello, no seq",
                    message.body,
                )
                return
        return
    for conn in run.server.connections:
        lines = [e for e in run.transcript.worker_lines() if e.conn == conn.number]
        if not lines:
            continue
        first = lines[0].message
        if first is None or first.type != "hello":
            yield fail(
                "AUTH-2",
                f"connection #{conn.number} did not begin with hello",
                "hello",
                lines[0].text,
            )
            continue
        yield from _hello_fields(run, first)
        early = [e for e in lines[1:] if conn.welcomed_at is None or e.t < conn.welcomed_at]
        if early:
            yield fail(
                "AUTH-2",
                f"connection #{conn.number}: sent before welcome",
                "nothing until welcome",
                early[0].text,
            )


def _hello_fields(run: Run, hello: Message) -> Findings:
    assert run.worker is not None
    body = hello.body
    if body.get("token") != run.token:
        yield fail(
            "AUTH-2", "hello does not carry the payload's token", run.token, body.get("token")
        )
    if body.get("pid") != run.worker.pid:
        yield fail(
            "AUTH-2", "hello pid is not the worker's process id", run.worker.pid, body.get("pid")
        )
    used = body.get("features") or []
    unknown = [f for f in used if f not in run.offered]
    if unknown:
        yield fail("NEG-2", "hello names extensions the payload did not offer", run.offered, used)


def start_in_time(run: Run) -> Findings:
    """START-1: the first message arrives soon after the spawn (Timing.startup_ms)."""
    assert run.worker is not None
    first = next(iter(run.entries()), None)
    limit = run.timing.startup_ms
    took = ms_between(run, run.worker.spawned_at, first.t) if first is not None else 0
    if took > limit:
        yield fail(
            "START-1",
            "the first message came late",
            f"≤ {limit:.0f} ms after spawn",
            f"{took:.0f} ms",
        )


def heartbeats(run: Run) -> Findings:
    """HB-2: a heartbeat at least every interval from started to the terminal message."""
    if not run.case.timed:
        return
    interval = run.timing.interval_ms
    limit = interval + run.timing.tolerance_ms
    for points, stamps in _heartbeat_segments(run):
        gaps = [ms_between(run, a, b) for a, b in pairwise(points)]
        worst_gap = max(gaps, default=0)
        if worst_gap > limit:
            at = points[gaps.index(worst_gap)]
            yield fail(
                "HB-2",
                f"no heartbeat for {worst_gap:.0f} ms (from {at:.3f}s)",
                f"a heartbeat at least every {interval} ms (+{run.timing.tolerance_ms:.0f}"
                " ms tolerance)",
                f"{worst_gap:.0f} ms",
            )
            return
        # How often is judged by the worker's own timestamps: receipt times
        # bunch up whenever the harness reads late.
        sent = [b - a for a, b in pairwise(stamps)]
        if len(sent) >= 4 and sum(sent) / len(sent) < interval * 0.45:
            yield nonstrict(
                "HB-2",
                "heartbeats more often than every interval / 2",
                f"≥ {interval / 2:.0f} ms apart",
                f"{sum(sent) / len(sent):.0f} ms on average (by their timestamps)",
            )
            return


def _heartbeat_segments(run: Run) -> Iterator[tuple[list[float], list[int]]]:
    """Per connection: receipt times (start anchor, heartbeats, end anchor) in
    seconds, and the heartbeats' own timestamps."""
    first_started = next(iter(run.entries("started")), None)
    terminal = run.terminal()
    if first_started is None:
        return
    closed = {e.conn: e.t for e in run.transcript.entries if e.direction == "event" and e.conn}
    opened = {
        e.conn: e.t
        for e in run.transcript.entries
        if e.direction == "event" and e.text == "connected"
    }
    for conn in run.server.connections:
        if terminal is not None and opened.get(conn.number, 0) > terminal.t:
            continue  # nothing is owed once the terminal message is out (HB-2)
        own = [
            e
            for e in run.entries()
            if e.conn == conn.number
            and e.t >= first_started.t
            and e.message is not None
            and e.message.type != "hello"
        ]
        if not own:
            continue
        end = _end_of(conn.number, own, closed)
        if end is None:
            continue
        beats = [e for e in own if e.message is not None and e.message.type == "heartbeat"]
        beats = [e for e in beats if e.t < end]
        yield (
            [own[0].t, *(e.t for e in beats), end],
            [e.message.timestamp for e in beats if e.message],
        )


def _end_of(conn: int, own: list[Entry], closed: dict[int, float]) -> float | None:
    terminal = next((e for e in own if e.message is not None and e.message.is_terminal), None)
    return terminal.t if terminal is not None else closed.get(conn)


def exit_after_terminal(run: Run) -> Findings:
    """EXIT-2 / EXIT-3: the right status, soon after the terminal message."""
    assert run.worker is not None
    terminal = run.terminal()
    if terminal is None or terminal.message is None:
        return
    if not run.worker.exited or run.worker.exited_at is None:
        yield fail(
            "EXIT-3",
            "the worker did not exit after its terminal message",
            f"exit ≤ {EXIT_AFTER_TERMINAL_MS} ms after it",
            "still running",
        )
        return
    code = run.worker.returncode
    if terminal.message.type == "completed" and code != 0:
        yield fail("EXIT-2", "non-zero exit status after completed", 0, code)
    if terminal.message.type == "failed" and code == 0:
        yield fail("EXIT-2", "exit status 0 after failed", "non-zero (1)", code)
    since = _acknowledged_at(run, terminal)
    late = ms_between(run, since, run.worker.exited_at)
    if late > EXIT_AFTER_TERMINAL_MS + run.timing.tolerance_ms:
        yield fail(
            "EXIT-3",
            "the worker lingered after its terminal message",
            f"exit ≤ {EXIT_AFTER_TERMINAL_MS} ms after it (+{run.timing.tolerance_ms:.0f}"
            " ms tolerance)",
            f"{late:.0f} ms",
        )


def ms_between(run: Run, start: float, end: float) -> float:
    """Milliseconds from ``start`` to ``end``, less what the harness stalled meanwhile."""
    return (end - start - run.transcript.stalled(start, end)) * 1000


def _acknowledged_at(run: Run, terminal: Entry) -> float:
    """When the terminal message was acknowledged (REPLAY-3); its receipt for v1."""
    assert terminal.message is not None
    seq = terminal.message.seq
    if seq is None:
        return terminal.t
    for e in run.transcript.entries:
        if e.direction != "server" or e.t < terminal.t or e.message is None:
            continue
        body = e.message.body
        if body["type"] == "ack" and body["seq"] >= seq:
            return e.t
        if body["type"] == "welcome" and body["lastSeq"] >= seq:  # covered on a reconnect
            return e.t
    return terminal.t


#: Run on every case that connects.
COMMON = (
    lines_valid,
    job_ids,
    stream_rules,
    timestamps_sane,
    quiet_stdout,
    negotiation,
    start_in_time,
    heartbeats,
    exit_after_terminal,
)

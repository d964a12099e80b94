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

from extjob.protocol import (
    DEFAULT_MAX_LINE_BYTES,
    EXIT_AFTER_TERMINAL_MS,
    FEATURES,
    Message,
    StreamChecker,
    negotiate,
    terminal_ack_timeout_ms,
)

from .model import Finding, fail, nonstrict
from .run import Run
from .transcript import Entry

Findings = Iterator[Finding]

#: A worker's clock may differ from ours, but not by this much (ms).
CLOCK_SKEW_MS = 5 * 60 * 1000


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
    usable = negotiate(run.offered, FEATURES)
    wrong = [f for f in used if f not in usable]
    if wrong:
        yield fail(
            "NEG-2",
            "hello names extensions that are not both offered and usable "
            "(unknown names are ignored; replay, control, spool, checkpoint need auth; "
            "spool needs replay)",
            f"a subset of {usable}",
            used,
        )


def start_in_time(run: Run) -> Findings:
    """START-1: the first message arrives soon after the spawn (Timing.startup_ms)."""
    assert run.worker is not None
    first = next(iter(run.entries()), None)
    limit = run.timing.startup_ms
    until = first.t if first is not None else (run.worker.exited_at or run.transcript.now())
    took = ms_between(run, run.worker.spawned_at, until)
    if first is None and run.worker.exited:
        return  # it gave up or crashed: other checks say why
    if took > limit:
        yield fail(
            "START-1",
            "the first message came late" if first is not None else "no first message",
            f"≤ {limit:.0f} ms after spawn",
            f"{took:.0f} ms",
        )


def heartbeats(run: Run) -> Findings:
    """HB-2 over the whole attempt: from started to the terminal message, across
    connections, a heartbeat at least every interval; the outages the harness
    caused are excused (a heartbeat without a connection is dropped, HB-2)."""
    if not run.case.timed:
        return
    started = next(iter(run.entries("started")), None)
    if started is None:
        return
    end = _attempt_end(run)
    beats = [e for e in run.entries("heartbeat") if started.t < e.t < end]
    points = [started.t, *(e.t for e in beats), end]
    outages = outage_windows(run)
    interval = run.timing.interval_ms
    limit = run.timing.upper(interval)
    gaps = [ms_between(run, a, b) - 1000 * _overlap(outages, a, b) for a, b in pairwise(points)]
    worst_gap = max(gaps, default=0.0)
    if worst_gap > limit:
        at = points[gaps.index(worst_gap)]
        waived = f"; {run.timing.waivers[0]}" if run.timing.waivers else ""
        yield fail(
            "HB-2",
            f"no heartbeat for {worst_gap:.0f} ms (from {at:.3f}s; over all connections"
            " of the attempt, outages the harness caused left out)",
            f"a heartbeat at least every {run.timing.explain(interval)}{waived}",
            f"{worst_gap:.0f} ms",
        )
        return
    # How often is judged by the worker's own timestamps: receipt times
    # bunch up whenever the harness reads late.
    stamps = [e.message.timestamp for e in beats if e.message is not None]
    sent = [b - a for a, b in pairwise(stamps)]
    if len(sent) >= 4 and sum(sent) / len(sent) < interval * 0.45:
        yield nonstrict(
            "HB-2",
            "heartbeats more often than every interval / 2",
            f"≥ {interval / 2:.0f} ms apart",
            f"{sum(sent) / len(sent):.0f} ms on average (by their timestamps)",
        )


def _attempt_end(run: Run) -> float:
    """Until when heartbeats are owed: the terminal message, else the exit (or now)."""
    assert run.worker is not None
    terminal = run.terminal()
    if terminal is not None:
        return terminal.t
    return run.worker.exited_at if run.worker.exited_at is not None else run.transcript.now()


def outage_windows(run: Run) -> list[tuple[float, float]]:
    """From each fault the harness injected until the worker was up again (a new
    connection welcomed, or for v1 opened)."""
    windows = []
    for at in run.notes.get("faults", []):
        up = [
            (c.welcomed_at if run.extended else opened_at(run, c.number))
            for c in run.server.connections
            if opened_at(run, c.number) >= at
        ]
        back = min((t for t in up if t is not None), default=run.transcript.now())
        windows.append((at, back))
    return windows


def _overlap(windows: list[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in windows)


def opened_at(run: Run, conn: int) -> float:
    """When connection ``conn`` was accepted."""
    return next(
        e.t
        for e in run.transcript.entries
        if e.conn == conn and e.direction == "event" and e.text == "connected"
    )


def exit_after_terminal(run: Run) -> Findings:
    """EXIT-2 / EXIT-3: the right status, soon after the terminal message was
    acknowledged; REPLAY-3 when it never was."""
    assert run.worker is not None
    terminal = run.terminal()
    if terminal is None or terminal.message is None:
        return
    acked = _acknowledged_at(run, terminal)
    sequenced = terminal.message.seq is not None
    bound = run.timing.explain(EXIT_AFTER_TERMINAL_MS)
    if not run.worker.exited or run.worker.exited_at is None:
        if sequenced and acked is None:
            yield fail(
                "REPLAY-3",
                "the terminal message was never acknowledged, and the worker neither treated "
                "the connection as failed (to replay it) nor gave up",
                f"a new connection within {run.timing.explain(_ack_wait(run))}",
                "still running, on the same connection",
            )
        else:
            yield fail(
                "EXIT-3",
                "the worker did not exit after its terminal message"
                + (" was acknowledged" if sequenced else ""),
                f"exit within {bound}",
                "still running",
            )
        return
    code = run.worker.returncode
    if terminal.message.type == "completed" and code != 0:
        yield fail("EXIT-2", "non-zero exit status after completed", 0, code)
    if terminal.message.type == "failed" and code == 0:
        yield fail("EXIT-2", "exit status 0 after failed", "non-zero (1)", code)
    if sequenced and acked is None and not run.notes.get("gone_for_good"):
        yield fail(
            "REPLAY-3",
            "the worker exited before its terminal message was acknowledged",
            "keep it (and the process) until an ack or a covering welcome",
            f"exit {ms_between(run, terminal.t, run.worker.exited_at):.0f} ms after it, no ack",
        )
        return
    since = terminal.t if acked is None else acked
    late = ms_between(run, since, run.worker.exited_at)
    if late > run.timing.upper(EXIT_AFTER_TERMINAL_MS):
        yield fail(
            "EXIT-3",
            "the worker lingered after its terminal message"
            + (" was acknowledged" if sequenced else ""),
            f"exit within {bound}",
            f"{late:.0f} ms",
        )


def _ack_wait(run: Run) -> int:
    return terminal_ack_timeout_ms(run.timing.advised_interval_ms)


def ms_between(run: Run, start: float, end: float) -> float:
    """Milliseconds from ``start`` to ``end``, less how late a stall of the
    harness made it notice ``end``."""
    return (end - start - run.transcript.late_by(start, end)) * 1000


def _acknowledged_at(run: Run, terminal: Entry) -> float | None:
    """When the terminal message was acknowledged (REPLAY-3); its receipt for v1;
    None if it never was."""
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
    return None


def line_sizes(run: Run) -> Findings:
    """LIMIT-1: no line longer than the payload's maxLineBytes."""
    limit = run.payload.get("maxLineBytes", DEFAULT_MAX_LINE_BYTES)
    for entry in run.transcript.worker_lines():
        size = entry.size
        if size > limit:
            yield fail(
                "LIMIT-1",
                f"a line of {size} bytes at {entry.t:.3f}s, longer than maxLineBytes",
                f"≤ {limit} bytes (a message too large fails locally)",
                f"{size} bytes",
            )
            return


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
    line_sizes,
)

"""Expectations: the checks of single cases, each ``check(run) -> findings``.

They complement the checks every case runs (:mod:`.checks`) with what a
scenario or a fault makes the worker owe: the scenario's result (FIX-2), a
reconnect, a replay, a spool file, a checkpoint.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from itertools import pairwise
from typing import Any

from extjob.protocol import decode, terminal_ack_timeout_ms

from . import checks
from .drives import cancel_deadline_ms
from .model import Finding, fail, nonstrict
from .run import Run

Check = Callable[[Run], Iterator[Finding]]


def expect_completed(result: Any) -> Check:
    def check(run: Run) -> Iterator[Finding]:
        yield from _expect_terminal(run, "completed")
        done = run.messages("completed")
        if done and done[0].body.get("result") != result:
            yield fail(
                "MSG-7",
                "wrong result (the fixture's scenario, FIX-2)",
                result,
                done[0].body.get("result"),
            )

    return check


def expect_failed(error_text: str) -> Check:
    def check(run: Run) -> Iterator[Finding]:
        yield from _expect_terminal(run, "failed")
        failed = run.messages("failed")
        if failed and failed[0].body.get("error") != error_text:
            yield fail("MSG-8", "wrong error text", error_text, failed[0].body.get("error"))

    return check


def _expect_terminal(run: Run, type_: str) -> Iterator[Finding]:
    terminal = run.terminal()
    if terminal is None or terminal.message is None:
        assert run.worker is not None
        yield fail(
            run.case.requirements[0],
            f"no terminal message arrived (expected {type_})",
            type_,
            "process still running"
            if not run.worker.exited
            else f"exit status {run.worker.returncode}",
        )
    elif terminal.message.type != type_:
        yield fail(
            run.case.requirements[0], "the wrong terminal message", type_, terminal.message.body
        )


def expect_progress(percent: float, message: str) -> Check:
    def check(run: Run) -> Iterator[Finding]:
        found = [m.body for m in run.messages("progress")]
        if not any(b.get("percent") == percent and b.get("message") == message for b in found):
            yield fail(
                "MSG-4",
                "the scenario's progress did not arrive intact",
                {"percent": percent, "message": message},
                found[:3],
            )

    return check


def expect_logs(expected: list[tuple[str, str, Any]]) -> Check:
    """The logs, in order, once each (level, message, data)."""

    def check(run: Run) -> Iterator[Finding]:
        got = _unique_by_seq(run, "log")
        seen = [(m.body.get("level"), m.body.get("message"), m.body.get("data")) for m in got]
        if seen != expected:
            first = next(
                (i for i, (a, b) in enumerate(zip(seen, expected, strict=False)) if a != b),
                min(len(seen), len(expected)),
            )
            yield fail(
                run.case.requirements[0],
                f"log messages differ from #{first + 1} "
                f"({len(seen)} received, {len(expected)} sent)",
                expected[first] if first < len(expected) else "nothing more",
                seen[first] if first < len(seen) else "nothing",
            )

    return check


def _unique_by_seq(run: Run, type_: str) -> list[Any]:
    """Messages once each: a replay (same seq) counts once (REPLAY-5)."""
    seen: set[int] = set()
    out = []
    for message in run.messages(type_):
        if message.seq is not None:
            if message.seq in seen:
                continue
            seen.add(message.seq)
        out.append(message)
    return out


def expect_progress_count(count: int) -> Check:
    def check(run: Run) -> Iterator[Finding]:
        got: list[float] = [m.body["percent"] for m in run.messages("progress")]
        expected = [i * 100 / count for i in range(1, count + 1)]
        if len(got) != count or any(abs(a - b) > 1e-9 for a, b in zip(got, expected, strict=False)):
            yield fail(
                "MSG-4",
                "progress messages lost, reordered or wrong",
                f"{count} messages, percent i*100/count",
                f"{len(got)} messages: {got[:5]}…",
            )
        elif any(b < a for a, b in pairwise(got)):
            yield nonstrict("MSG-4", "percent decreased", "non-decreasing", got)

    return check


def refused(run: Run) -> Iterator[Finding]:
    """PAY-6: a non-zero exit, one line on stderr, no connection."""
    assert run.worker is not None
    if not run.worker.exited:
        yield fail("PAY-6", "the worker did not exit", "exit status 2", "still running")
        return
    if run.server.connections:
        yield fail(
            "PAY-6",
            "the worker connected although it had no valid payload",
            "no connection",
            f"{len(run.server.connections)} connection(s)",
        )
    if run.worker.returncode == 0:
        yield fail("PAY-6", "exit status 0 on a bad payload", "non-zero (2)", 0)
    elif run.worker.returncode != 2:
        yield nonstrict("PAY-6", "exit status 2 is recommended", 2, run.worker.returncode)
    if not run.worker.stderr().strip():
        yield fail(
            "PAY-6",
            "nothing on standard error says what is wrong",
            "one line naming the problem",
            "empty",
        )


def crashed(code: int) -> Check:
    def check(run: Run) -> Iterator[Finding]:
        assert run.worker is not None
        if run.worker.returncode != code:
            yield fail(
                "FIX-2", "the crash scenario must exit with its code", code, run.worker.returncode
            )
        terminal = run.terminal()
        if terminal is not None:
            yield fail(
                "FIX-2", "the crash scenario sends nothing after started", "nothing", terminal.text
            )

    return check


def reconnected(run: Run) -> Iterator[Finding]:
    """RECONNECT-1: a new connection soon after the fault; LIFE-3 / REPLAY-4 on it."""
    since = run.notes.get("back_at", run.notes.get("dropped_at"))
    if since is None:
        yield fail(
            run.case.requirements[0],
            "the fault could not be injected: no started on a connection",
            "started",
            "nothing",
        )
        return
    later = [c for c in run.server.connections if _opened_at(run, c.number) >= since]
    # Whatever the outage, the next try comes within one wait: at most 2000 ms
    # plus 20 % jitter (RECONNECT-1).
    limit = 2000 * 1.2 + run.timing.tolerance_ms
    if not later:
        yield fail(
            "RECONNECT-1", "the worker never reconnected", f"≤ {limit:.0f} ms", "no new connection"
        )
        return
    delay = checks.ms_between(run, since, _opened_at(run, later[0].number))
    if delay > limit:
        yield fail(
            "RECONNECT-1", "the worker reconnected late", f"≤ {limit:.0f} ms", f"{delay:.0f} ms"
        )
    lines = [e for e in run.entries() if e.conn == later[0].number]
    first = lines[0].message if lines else None
    if not run.extended and (first is None or first.type != "started"):
        yield fail(
            "LIFE-3",
            "a v1 worker sends started again after it reconnects",
            "started first",
            lines[0].text if lines else "nothing",
        )


def _opened_at(run: Run, conn: int) -> float:
    return next(
        e.t
        for e in run.transcript.entries
        if e.conn == conn and e.direction == "event" and e.text == "connected"
    )


def replayed(run: Run) -> Iterator[Finding]:
    """REPLAY-4: after a welcome, everything its lastSeq does not cover, in order, once."""
    originals: dict[int, Any] = {}
    by_conn: dict[int, list[Any]] = {}
    for entry in run.entries():
        by_conn.setdefault(entry.conn, []).append(entry.message)
    welcomes = {
        e.conn: e.message
        for e in run.transcript.entries
        if e.direction == "server" and e.message is not None and e.message.type == "welcome"
    }
    for number in sorted(by_conn):
        welcome_msg = welcomes.get(number)
        mine = [m for m in by_conn[number] if m.seq is not None]
        if welcome_msg is not None and originals:
            last = welcome_msg.body["lastSeq"]
            owed = sorted(s for s in originals if s > last)
            covered = [m.seq for m in mine if m.seq <= last]
            if covered:
                yield fail(
                    "REPLAY-4",
                    f"connection #{number} resent what lastSeq {last} covers",
                    f"seq > {last}",
                    covered,
                )
            head = [m.seq for m in mine[: len(owed)]]
            if head != owed:
                yield fail(
                    "REPLAY-4",
                    f"connection #{number} did not replay the unacknowledged "
                    f"messages first, in order (lastSeq {last})",
                    owed,
                    head,
                )
            for m in mine:
                if m.seq in originals and originals[m.seq] != dict(m.body):
                    yield fail(
                        "REPLAY-4",
                        f"seq {m.seq} was replayed with other content",
                        originals[m.seq],
                        m.body,
                    )
                    break
        for m in mine:
            originals.setdefault(m.seq, dict(m.body))
    if len(run.server.connections) < 2:
        yield fail(
            run.case.requirements[0],
            "the fault was not followed by a new connection",
            "2 connections",
            len(run.server.connections),
        )


def every_sequenced_has_seq(run: Run) -> Iterator[Finding]:
    """REPLAY-1: with replay, every sequenced type carries seq."""
    for message in run.messages("started", "progress", "log", "checkpoint", "completed", "failed"):
        if message.seq is None:
            yield fail(
                "REPLAY-1",
                f"{message.type} without seq although replay was negotiated",
                "seq ≥ 1",
                message.body,
            )
            return
    if not run.messages("started"):
        yield fail("REPLAY-1", "no started arrived", "started with seq", "nothing")


def terminal_resent(run: Run) -> Iterator[Finding]:
    """REPLAY-3: without an ack for the terminal message, the connection is failed."""
    at = run.notes.get("terminal_at")
    if at is None:
        return
    wait = terminal_ack_timeout_ms(run.timing.advised_interval_ms)
    later = [c for c in run.server.connections if _opened_at(run, c.number) > at]
    if not later:
        yield fail(
            "REPLAY-3",
            "no new connection after the terminal ack was withheld",
            f"a reconnect about {wait} ms later, then a replay or a covering welcome",
            f"{len(run.server.connections)} connection(s)",
        )
        return
    delay = (_opened_at(run, later[0].number) - at) * 1000
    if delay < wait - run.timing.tolerance_ms:
        yield nonstrict(
            "REPLAY-3",
            "gave up on the ack earlier than max(2000, interval)",
            f"≈ {wait} ms",
            f"{delay:.0f} ms",
        )


def cancelled_in_time(run: Run) -> Iterator[Finding]:
    """CANCEL-2: the job ends within the cancel's deadlineMs."""
    at = run.notes.get("cancel_at")
    terminal = run.terminal()
    if at is None or terminal is None:
        return
    took = checks.ms_between(run, at, terminal.t)
    if took > cancel_deadline_ms(run):
        yield nonstrict(
            "CANCEL-2",
            "the job ended after the cancel's deadline",
            f"≤ {cancel_deadline_ms(run)} ms",
            f"{took:.0f} ms",
        )


def drained(run: Run) -> Iterator[Finding]:
    if run.notes.get("drained") is False:
        yield fail(
            "CTRL-6",
            "the worker stopped reading what the server sent",
            "2 MB of server lines read",
            "the harness's writes stalled",
        )


def spooled(run: Run) -> Iterator[Finding]:
    """SPOOL-2: hello, then the unacknowledged sequenced messages, in a 0600 file."""
    assert run.worker is not None
    if not run.worker.exited:
        yield fail(
            "RECONNECT-3",
            "the worker did not give up once the job code ended and the window passed",
            f"exit about {run.case.reconnect_window_ms} ms after the job code ended",
            "still running",
        )
    elif run.worker.returncode != 0:
        yield fail("EXIT-2", "the spooled job completed: exit 0", 0, run.worker.returncode)
    path = run.spool_path
    leftovers = sorted(p.name for p in path.parent.iterdir() if p != path)
    if leftovers:
        yield fail("SPOOL-2", "a temporary file was left behind", "only the spool file", leftovers)
    if not path.exists():
        yield fail("SPOOL-2", "no spool file", str(path), "missing")
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        yield fail("SPOOL-2", "the spool file is readable by others", "0600", oct(mode))
    lines = [line for line in path.read_bytes().split(b"\n") if line.strip()]
    try:
        messages = [decode(line) for line in lines]
    except Exception as exc:
        yield fail("SPOOL-2", f"an invalid line in the spool file: {exc}")
        return
    if not messages or messages[0].type != "hello" or messages[0].body.get("token") != run.token:
        yield fail(
            "SPOOL-2",
            "the spool file does not begin with hello carrying the token",
            "hello",
            messages[0].body if messages else "empty file",
        )
    seqs = [m.seq or 0 for m in messages[1:]]
    acked = run.server.acked_seq
    if any(s <= acked for s in seqs) or seqs != sorted(seqs):
        yield fail(
            "SPOOL-2",
            "spooled messages must be the unacknowledged ones, in seq order",
            f"seq > {acked}, increasing",
            seqs,
        )
    if not messages or not messages[-1].is_terminal:
        yield fail(
            "SPOOL-2",
            "the terminal message is not in the spool file",
            "completed last",
            [m.type for m in messages],
        )


def checkpoint_saved(run: Run) -> Iterator[Finding]:
    """CKPT-1: a sequenced checkpoint with the scenario's value, before the failure."""
    saved = run.messages("checkpoint")
    if not saved or saved[0].body.get("data") != {"step": 1}:
        yield fail(
            "CKPT-1",
            "no checkpoint with the scenario's value",
            {"step": 1},
            saved[0].body if saved else "nothing",
        )
    failed = run.messages("failed")
    if failed and failed[0].body.get("retryable") is False:
        yield fail("CKPT-4", "the checkpoint scenario's failure is retryable", True, False)

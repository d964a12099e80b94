"""The catalogue: every case as data, plus the small drives and checks it names.

A case id is ``<feature>/<topic>/<variant>`` and lists the SPEC requirements
it tests; ``--only`` takes an id prefix, a topic or a requirement id. The
*feature* is the level the case belongs to: ``core`` (what a v1 wrapper must
pass, with a payload that offers no extensions) or one extension, whose cases
are skipped unless the wrapper claims it (and every extension it needs).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from extjob.protocol import (
    FEATURES,
    ack,
    cancel,
    decode,
    error,
    terminal_ack_timeout_ms,
)

from . import checks
from .model import Finding, Timing, fail, nonstrict
from .run import Run

Check = Callable[[Run], Iterator[Finding]]
Drive = Callable[[Run], Awaitable[None]]
#: SPEC 11 scenarios as the fixture runs them; a callable sees the time budget.
Data = Mapping[str, Any] | Callable[[Timing], Mapping[str, Any]]

#: How long the harness keeps the listener away in the restart cases (s).
OUTAGE_S = 0.8
#: The cancel's deadlineMs (CANCEL-2): short, so that a late reaction shows.
CANCEL_DEADLINE_MS = 3000
#: Three lines of this overflow the socket buffers while the harness is not reading.
BULKY_TEXT = "bulk " * 120_000
#: A string with everything FRAME-2 and WRAP-3 say a wrapper must escape.
HARD_TEXT = 'quote " backslash \\ tab \t cr \r nl \n nul \x00 bell \x07 esc \x1b del \x7f é € 𝄞 end'


# -- drives: what the harness does while the worker runs ----------------------


async def just_wait(run: Run) -> None:
    await run.until_exit(run.case.budget_s)


async def _ready_for_fault(run: Run) -> bool:
    """Wait until the job runs; with ``withhold_acks``, until unacked logs pile up."""
    if run.case.withhold_acks:
        run.server.acking = False
    ready = await run.until_type("started") and await run.until_welcomed() is not None
    if ready and run.case.withhold_acks:
        await run.until(lambda: len(run.messages("log")) >= 3, 3)
    return ready


async def drop_after_started(run: Run) -> None:
    """Close the connection under the worker mid-job (TRANS-3, RECONNECT-1)."""
    if await _ready_for_fault(run):
        run.server.drop_connections()
        run.server.acking = True
        run.notes["dropped_at"] = run.transcript.now()
    await run.until_exit(run.case.budget_s)


async def restart_after_started(run: Run) -> None:
    """The listener goes away for a while and comes back at the same address."""
    if await _ready_for_fault(run):
        await run.server.stop("server stopped (restart)")
        await asyncio.sleep(run.timing.s(OUTAGE_S))  # the outage itself, not a wait
        run.server.acking = True
        await run.server.restart()
        run.notes["back_at"] = run.transcript.now()
    await run.until_exit(run.case.budget_s)


async def stop_for_good(run: Run) -> None:
    """The server goes away and never comes back (RECONNECT-3, SPOOL-2)."""
    run.server.acking = False
    if await run.until_type("started") and await run.until_welcomed():
        await run.server.stop("server stopped for good")
    await run.until_exit(run.case.budget_s)


async def withhold_terminal_ack(run: Run) -> None:
    """The terminal message is not acknowledged on its first connection (REPLAY-3)."""
    run.server.ack_terminal = False
    if await run.until(lambda: run.terminal() is not None, 5):
        run.notes["terminal_at"] = run.transcript.now()
        run.server.ack_terminal = True  # a replay on a new connection gets its ack
    await run.until_exit(run.case.budget_s)


async def stall_reading(run: Run) -> None:
    """A slow server: it stops reading for a while (the worker must not die)."""
    if await run.until_type("started"):
        run.server.reading.clear()
        await asyncio.sleep(run.timing.s(1.0))  # the stall itself
        run.server.reading.set()
    await run.until_exit(run.case.budget_s)


async def send_cancel(run: Run) -> None:
    conn = await run.until_welcomed()
    if conn is not None and await run.until_type("started"):
        run.server.send(conn, cancel(run.job_id, "requested", _cancel_deadline_ms(run)))
        run.notes["cancel_at"] = run.transcript.now()
    await run.until_exit(run.case.budget_s)


def _cancel_deadline_ms(run: Run) -> int:
    return round(CANCEL_DEADLINE_MS * run.timing.factor)


async def send_strange_lines(run: Run) -> None:
    """Unknown types, unknown fields and an informational error (CTRL-5, CTRL-6)."""
    conn = await run.until_welcomed()
    if conn is not None and await run.until_type("started"):
        for line in _strange_lines(run.job_id, run.server.acked_seq):
            run.server.send(conn, line)
    await run.until_exit(run.case.budget_s)


def _strange_lines(job_id: str, acked: int) -> list[dict[str, Any]]:
    envelope = {"jobId": job_id, "timestamp": 1}
    return [
        {"type": "x-vendor-note", **envelope, "note": "ignore me"},
        {"type": "reconfigure", **envelope, "heartbeatIntervalMs": 1},  # a future type
        {**error(job_id, "invalid_message", "informational only", "SRV-6"), "x-extra": [1, 2]},
        {**ack(job_id, max(acked, 1)), "x-extra": {"nested": True}},  # a repeated ack
    ]


async def flood(run: Run) -> None:
    """Two megabytes of server lines the worker must read and ignore (CTRL-6, LIMIT-3)."""
    conn = await run.until_welcomed()
    if conn is not None and await run.until_type("started"):
        big = {"type": "x-padding", "jobId": run.job_id, "timestamp": 1, "pad": "p" * 1_000_000}
        line = (json.dumps(big) + "\n").encode()
        drained = all([await run.server.send_raw(conn, line, run.timing.s(3)) for _ in range(2)])
        run.notes["drained"] = drained
    await run.until_exit(run.case.budget_s)


# -- checks of single cases ----------------------------------------------------


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
    delay = (_opened_at(run, later[0].number) - since) * 1000
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
    took = (terminal.t - at) * 1000
    if took > _cancel_deadline_ms(run):
        yield nonstrict(
            "CANCEL-2",
            "the job ended after the cancel's deadline",
            f"≤ {_cancel_deadline_ms(run)} ms",
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


# -- the catalogue ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    requirements: tuple[str, ...]  #: the first is the one a failure is charged to
    data: Data = field(default_factory=lambda: {"scenario": "complete"})
    checks: tuple[Check, ...] = ()
    requires: tuple[str, ...] = ()  #: extensions the wrapper must claim; () is the v1 core
    drive: Drive = just_wait
    stdin: str = "payload"  #: payload, env, env-donkeylabs, env-tcp-port, missing, malformed
    transport: str = "unix"
    timed: bool = True  #: heartbeat gaps mean something (not while the harness stalls)
    withhold_acks: bool = False
    budget_s: float = 6.0  #: how long the worker may take to exit, before the factor
    reconnect_window_ms: int = 60_000
    payload_extra: Mapping[str, Any] = field(default_factory=dict)
    offer_extra: tuple[str, ...] = ()  #: features offered beyond the claimed ones

    @property
    def feature(self) -> str:
        return self.requires[-1] if self.requires else "core"

    def data_for(self, timing: Timing) -> Mapping[str, Any]:
        return self.data(timing) if callable(self.data) else self.data

    def offer(self, claimed: frozenset[str]) -> tuple[str, ...]:
        """What the payload offers: every claimed extension, for an extended case."""
        if not self.requires:
            return ()
        return tuple(f for f in FEATURES if f in claimed) + self.offer_extra

    def all_checks(self) -> tuple[Check, ...]:
        if self.stdin in ("missing", "malformed"):
            return (refused, checks.quiet_stdout)
        return checks.COMMON + self.checks


def _sleep(timing: Timing) -> dict[str, Any]:
    """Long enough for several heartbeats at the interval the worker uses."""
    return {"scenario": "sleep", "ms": max(1200, 4 * timing.interval_ms)}


def _long_sleep(timing: Timing) -> dict[str, Any]:
    """Still sleeping when a worker reconnects after an outage (waits up to 1600 ms)."""
    return {"scenario": "sleep", "ms": max(3000, 4 * timing.interval_ms)}


def expect_slept(run: Run) -> Iterator[Finding]:
    yield from expect_completed({"slept": run.case.data_for(run.timing)["ms"]})(run)


COMPLETE = (expect_completed({"ok": True}), expect_progress(50, "halfway"))
LEVELS = [(lv, lv, {"level": lv}) for lv in ("debug", "info", "warn", "error")]
EXT = ("auth",)

CASES: tuple[Case, ...] = (
    # -- core: what a v1 wrapper must do with a v1 server ------------------------
    Case(
        "core/lifecycle/complete",
        "started, progress, completed; exit 0",
        ("MSG-7", "LIFE-1", "EXIT-2", "EXIT-3", "PAY-5"),
        checks=COMPLETE,
    ),
    Case(
        "core/lifecycle/fail",
        "the job code's error becomes failed; exit non-zero",
        ("MSG-8", "WRAP-2", "EXIT-2"),
        {"scenario": "fail", "message": "boom: disk full"},
        checks=(expect_failed("boom: disk full"),),
    ),
    Case(
        "core/lifecycle/crash",
        "a crash exits with its own status and sends nothing more",
        ("FIX-2", "EXIT-1"),
        {"scenario": "crash", "code": 3},
        checks=(crashed(3),),
    ),
    Case(
        "core/lifecycle/default-scenario",
        "a payload without scenario completes",
        ("FIX-1",),
        {},
        checks=COMPLETE,
    ),
    Case(
        "core/heartbeat/busy",
        "heartbeats continue while the job code blocks",
        ("HB-2",),
        _sleep,
        checks=(expect_slept,),
    ),
    Case(
        "core/framing/escaping",
        "every hard string survives the wire (quotes, controls, non-BMP)",
        ("FRAME-2", "WRAP-3"),
        {"scenario": "echo", "text": HARD_TEXT, "value": {"text": HARD_TEXT, "n": [1, 2.5, None]}},
        checks=(
            expect_completed({"text": HARD_TEXT, "n": [1, 2.5, None]}),
            expect_progress(50, HARD_TEXT),
            expect_logs([("info", HARD_TEXT, None)]),
        ),
    ),
    Case(
        "core/framing/large-result",
        "a 1 MiB result arrives in one line",
        ("LIMIT-1", "FRAME-1"),
        {"scenario": "large", "bytes": 1 << 20},
        checks=(expect_completed("x" * (1 << 20)),),
    ),
    Case(
        "core/messages/levels",
        "one log at each level",
        ("MSG-6", "WRAP-1"),
        {"scenario": "levels"},
        checks=(expect_logs(LEVELS),),
    ),
    Case(
        "core/messages/logs",
        "logs arrive in order, once each",
        ("MSG-6", "SRV-3"),
        {"scenario": "logs", "count": 50},
        checks=(
            expect_completed({"count": 50}),
            expect_logs([("info", f"line {i}", {"i": i}) for i in range(1, 51)]),
        ),
    ),
    Case(
        "core/messages/progress-burst",
        "200 progress messages as fast as possible",
        ("MSG-4", "WRAP-4"),
        {"scenario": "progress", "count": 200},
        checks=(expect_completed({"count": 200}), expect_progress_count(200)),
    ),
    Case(
        "core/payload/env",
        "empty stdin: jobId, name, socketPath from EXTJOB_*",
        ("ENV-2", "FIX-1"),
        stdin="env",
        checks=COMPLETE,
    ),
    Case(
        "core/payload/env-donkeylabs",
        "empty stdin: only the DONKEYLABS_* variables",
        ("ENV-2",),
        stdin="env-donkeylabs",
        checks=COMPLETE,
    ),
    Case(
        "core/payload/env-tcp-port",
        "only DONKEYLABS_TCP_PORT: tcp://127.0.0.1:<port>",
        ("ENV-2", "TRANS-1"),
        stdin="env-tcp-port",
        transport="tcp",
        checks=COMPLETE,
    ),
    Case(
        "core/payload/missing",
        "no payload at all: exit non-zero, say why, never connect",
        ("PAY-6",),
        stdin="missing",
    ),
    Case(
        "core/payload/malformed",
        "a payload that is not JSON (the environment is set): "
        "exit non-zero, say why, never connect",
        ("PAY-6",),
        stdin="malformed",
    ),
    Case(
        "core/transport/tcp",
        "socketPath tcp://127.0.0.1:PORT",
        ("TRANS-1",),
        transport="tcp",
        checks=COMPLETE,
    ),
    Case(
        "core/reconnect/drop",
        "the connection is dropped mid-job: reconnect, started again",
        ("RECONNECT-1", "LIFE-3", "RECONNECT-2"),
        _sleep,
        drive=drop_after_started,
        checks=(expect_slept, reconnected),
    ),
    Case(
        "core/reconnect/restart",
        "the server is gone for a while, then back at the same path",
        ("RECONNECT-1", "RECONNECT-4", "LIFE-3"),
        _long_sleep,
        drive=restart_after_started,
        checks=(expect_slept, reconnected),
    ),
    Case(
        "core/transport/slow-server",
        "the server stops reading for a second while the worker writes 1.8 MB",
        ("RECONNECT-2", "MSG-6"),
        {"scenario": "echo", "text": BULKY_TEXT, "value": 1},
        drive=stall_reading,
        timed=False,
        checks=(expect_completed(1), expect_logs([("info", BULKY_TEXT, None)])),
    ),
    # -- auth -----------------------------------------------------------------------
    Case(
        "auth/hello/first",
        "hello with token and pid first, then wait for welcome",
        ("AUTH-2", "NEG-2"),
        requires=EXT,
        checks=COMPLETE,
        drive=just_wait,
    ),
    Case(
        "auth/hello/slow-welcome",
        "nothing but hello until the (late) welcome",
        ("AUTH-2",),
        requires=EXT,
        checks=COMPLETE,
        drive=lambda run: _slow_welcome(run),
    ),
    Case(
        "auth/negotiation/unknown-feature",
        "an offered feature it does not know is ignored",
        ("NEG-1", "NEG-2"),
        requires=EXT,
        offer_extra=("x-future",),
        checks=COMPLETE,
    ),
    Case(
        "auth/reconnect/hello-again",
        "after a drop, the new connection begins with hello",
        ("RECONNECT-4", "AUTH-2"),
        _sleep,
        requires=EXT,
        drive=drop_after_started,
        checks=(expect_slept, reconnected),
    ),
    # -- replay ---------------------------------------------------------------------
    Case(
        "replay/seq/all-sequenced",
        "every sequenced message carries an increasing seq",
        ("REPLAY-1", "STREAM-6"),
        {"scenario": "logs", "count": 10},
        requires=(*EXT, "replay"),
        checks=(every_sequenced_has_seq, expect_completed({"count": 10})),
    ),
    Case(
        "replay/restart/unacked",
        "acks withheld, then a restart: the rest is replayed",
        ("REPLAY-4", "REPLAY-5", "RECONNECT-4"),
        {"scenario": "logs", "count": 30, "intervalMs": 40},
        requires=(*EXT, "replay"),
        withhold_acks=True,
        drive=restart_after_started,
        checks=(
            replayed,
            expect_completed({"count": 30}),
            expect_logs([("info", f"line {i}", {"i": i}) for i in range(1, 31)]),
        ),
    ),
    Case(
        "replay/drop/lastseq",
        "acks withheld, then a drop: only what lastSeq does not cover is resent",
        ("REPLAY-4",),
        {"scenario": "logs", "count": 30, "intervalMs": 40},
        requires=(*EXT, "replay"),
        drive=drop_after_started,
        withhold_acks=True,
        checks=(
            replayed,
            expect_completed({"count": 30}),
            expect_logs([("info", f"line {i}", {"i": i}) for i in range(1, 31)]),
        ),
    ),
    Case(
        "replay/terminal/ack-timeout",
        "no ack for the terminal message: the worker reconnects and exits once it is covered",
        ("REPLAY-3", "EXIT-3"),
        requires=(*EXT, "replay"),
        drive=withhold_terminal_ack,
        budget_s=8,
        checks=(terminal_resent, *COMPLETE),
    ),
    # -- control --------------------------------------------------------------------
    Case(
        "control/cancel/requested",
        "cancel reaches the job code, which ends the job within the deadline",
        ("CANCEL-3", "CTRL-4", "CANCEL-2"),
        {"scenario": "cancel", "ms": 5000},
        requires=(*EXT, "control"),
        drive=send_cancel,
        checks=(expect_failed("cancelled"), cancelled_in_time),
    ),
    Case(
        "control/ignore/unknown-lines",
        "unknown server types, fields and errors are ignored",
        ("CTRL-6", "CTRL-5"),
        _sleep,
        requires=(*EXT, "control"),
        drive=send_strange_lines,
        checks=(expect_slept,),
    ),
    Case(
        "control/read/flood",
        "the worker keeps reading 2 MB of server lines",
        ("CTRL-6", "LIMIT-3"),
        _sleep,
        requires=(*EXT, "control"),
        drive=flood,
        checks=(expect_slept, drained),
    ),
    # -- spool ----------------------------------------------------------------------
    Case(
        "spool/give-up/result",
        "the server never comes back: the result is spooled",
        ("SPOOL-2", "RECONNECT-3"),
        {"scenario": "sleep", "ms": 300},
        requires=(*EXT, "replay", "spool"),
        drive=stop_for_good,
        reconnect_window_ms=500,
        timed=False,
        checks=(spooled,),
    ),
    # -- checkpoint -----------------------------------------------------------------
    Case(
        "checkpoint/save",
        "a checkpoint is saved and sequenced, then a retryable failure",
        ("CKPT-1", "CKPT-4"),
        {"scenario": "checkpoint"},
        requires=(*EXT, "checkpoint"),
        checks=(expect_failed("checkpoint saved"), checkpoint_saved),
    ),
    Case(
        "checkpoint/resume",
        "attempt 2 sees the previous attempt's checkpoint",
        ("CKPT-2", "CKPT-3"),
        {"scenario": "checkpoint"},
        requires=(*EXT, "checkpoint"),
        payload_extra={"attempt": 2, "maxAttempts": 3, "checkpoint": {"step": 7}},
        checks=(expect_completed({"resumedFrom": {"step": 7}}),),
    ),
)


async def _slow_welcome(run: Run) -> None:
    run.server.welcome_delay_s = run.timing.s(0.5)
    await just_wait(run)


def select(patterns: list[str]) -> list[Case]:
    """Cases matching any pattern: an id prefix, a topic or a requirement id."""
    if not patterns:
        return list(CASES)

    def matches(case: Case, pattern: str) -> bool:
        parts = case.id.split("/")
        return (
            case.id.startswith(pattern)
            or any("/".join(parts[i:]).startswith(pattern) for i in range(1, len(parts)))
            or pattern.upper() in case.requirements
        )

    return [c for c in CASES if any(matches(c, p) for p in patterns)]

"""The catalogue: every case as data, naming its drive and its checks.

A case id is ``<feature>/<topic>/<variant>`` and lists the SPEC requirements
it tests; ``--only`` takes an id prefix, a topic or a requirement id. The
*feature* is the level the case belongs to: ``core`` (what a v1 wrapper must
pass, with a payload that offers no extensions) or one extension, whose cases
are skipped unless the wrapper claims it (and every extension it needs).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from extjob.protocol import FEATURES

from . import checks
from .drives import (
    drop_after_started,
    flood,
    just_wait,
    restart_after_started,
    send_cancel,
    send_strange_lines,
    slow_welcome,
    stall_reading,
    stop_for_good,
    withhold_terminal_ack,
)
from .expectations import (
    Check,
    cancelled_in_time,
    checkpoint_saved,
    crashed,
    drained,
    every_sequenced_has_seq,
    expect_completed,
    expect_failed,
    expect_logs,
    expect_progress,
    expect_progress_count,
    reconnected,
    refused,
    replayed,
    spooled,
    terminal_resent,
)
from .model import Finding, Timing
from .run import Run

Drive = Callable[[Run], Awaitable[None]]
#: SPEC 11 scenarios as the fixture runs them; a callable sees the time budget.
Data = Mapping[str, Any] | Callable[[Timing], Mapping[str, Any]]

#: Three lines of this overflow the socket buffers while the harness is not reading.
BULKY_TEXT = "bulk " * 120_000
#: A string with everything FRAME-2 and WRAP-3 say a wrapper must escape.
HARD_TEXT = 'quote " backslash \\ tab \t cr \r nl \n nul \x00 bell \x07 esc \x1b del \x7f é € 𝄞 end'


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
    budget_s: float = 6.0  #: time to exit beyond what the scenario sleeps, before the factor
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
    return {"scenario": "sleep", "ms": max(3000, 2 * timing.interval_ms)}


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
        drive=slow_welcome,
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

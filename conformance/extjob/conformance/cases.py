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
    crlf_lines,
    drop_after_started,
    flood,
    hang_up_after_started,
    huge_welcome,
    just_wait,
    no_first_welcome,
    outage_while_logging,
    refuse_hello,
    restart_after_started,
    send_cancel,
    send_garbage,
    send_strange_lines,
    sigterm_after_started,
    slow_terminal_ack,
    slow_welcome,
    stall_reading,
    stop_for_good,
    withhold_acks_until_blocked,
    withhold_terminal_ack,
)
from .expectations import (
    Check,
    backed_off,
    buffer_blocked,
    cancelled_in_time,
    checkpoint_saved,
    crashed,
    drained,
    dropped_logs_counted,
    every_sequenced_has_seq,
    expect_completed,
    expect_failed,
    expect_logs,
    expect_progress,
    expect_progress_count,
    failure_shortened,
    gave_up,
    job_code_saw_cancel,
    reconnected,
    refused,
    replayed,
    result_too_large,
    spooled,
    terminal_resent,
    told_auth,
    welcome_timed_out,
)
from .model import Finding, Timing, fail, nonstrict
from .run import Run

Drive = Callable[[Run], Awaitable[None]]
#: SPEC 11 scenarios as the fixture runs them; a callable sees the time budget.
Data = Mapping[str, Any] | Callable[[Timing], Mapping[str, Any]]

#: Three lines of this overflow the socket buffers while the harness is not reading.
BULKY_TEXT = "bulk " * 120_000
#: A string with everything FRAME-2 and WRAP-3 say a wrapper must escape.
HARD_TEXT = 'quote " backslash \\ tab \t cr \r nl \n nul \x00 bell \x07 esc \x1b del \x7f é € 𝄞 end'
#: Lone surrogates (a high, a low) around a pair: the payload carries them as
#: JSON escapes, as the original's JSON.stringify writes them (FRAME-2).
SURROGATE_TEXT = "high \ud800 low \udc00 pair \ud834\udd1e end"
#: What FRAME-2 makes of it: each lone one becomes U+FFFD, the pair stays.
SURROGATE_FIXED = "high \ufffd low \ufffd pair 𝄞 end"
#: A worker with no server at all (RECONNECT-6): nothing listens here.
NOWHERE = "/nonexistent-extjob-conformance/job.sock"
#: The ``crash`` code that shows the job code ran when it must not have.
JOB_CODE_RAN = 7
#: The line limit a payload may set at its lowest (PAY-3), for LIMIT-1 cases.
SMALL_LINES = 65_536


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    requirements: tuple[str, ...]  #: the first is the one a failure is charged to
    data: Data = field(default_factory=lambda: {"scenario": "complete"})
    checks: tuple[Check, ...] = ()
    requires: tuple[str, ...] = ()  #: extensions the wrapper must claim; () is the v1 core
    drive: Drive = just_wait
    #: payload, partial, env, env-donkeylabs, env-tcp-port, missing, malformed, not-object
    stdin: str = "payload"
    transport: str = "unix"
    streams: str = "files"  #: the worker's stdout and stderr: files, closed, broken (WRAP-5)
    connects: bool = True  #: False: no server is there at all (RECONNECT-6)
    timed: bool = True  #: heartbeat gaps mean something (not while the harness stalls)
    withhold_acks: bool = False
    budget_s: float = 6.0  #: time to exit beyond what the scenario sleeps, before the factor
    reconnect_window_ms: int = 60_000
    payload_extra: Mapping[str, Any] = field(default_factory=dict)
    offer_extra: tuple[str, ...] = ()  #: features offered beyond the claimed ones
    offer_only: tuple[str, ...] | None = None  #: offer no more than these

    @property
    def feature(self) -> str:
        return self.requires[-1] if self.requires else "core"

    def data_for(self, timing: Timing) -> Mapping[str, Any]:
        return self.data(timing) if callable(self.data) else self.data

    def offer(self, claimed: frozenset[str]) -> tuple[str, ...]:
        """What the payload offers: every claimed extension, for an extended case."""
        if not self.requires:
            return ()
        limit = FEATURES if self.offer_only is None else self.offer_only
        return tuple(f for f in FEATURES if f in claimed and f in limit) + self.offer_extra

    def all_checks(self) -> tuple[Check, ...]:
        if self.stdin in ("missing", "malformed", "not-object"):
            return (refused, checks.quiet_stdout)
        if not self.connects:
            return (checks.quiet_stdout, *self.checks)
        return checks.COMMON + self.checks


def _cancellable(timing: Timing) -> dict[str, Any]:
    """Job code that runs until cancelled, longer than a late cancel could take
    (the cancel's deadline and what a slow wrapper adds, scaled by the time factor)."""
    return {"scenario": "cancel", "ms": round(5000 * timing.factor)}


def _sleep(timing: Timing) -> dict[str, Any]:
    """Long enough for several heartbeats at the interval the worker uses."""
    return {"scenario": "sleep", "ms": max(3000, 2 * timing.interval_ms)}


def _long_sleep(timing: Timing) -> dict[str, Any]:
    """Still sleeping when a worker reconnects after an outage (which the time
    factor lengthens) and the waits before it (up to 1600 ms, also scaled)."""
    return {"scenario": "sleep", "ms": round(max(3000, 4 * timing.interval_ms) * timing.factor)}


def _backoff_sleep(timing: Timing) -> dict[str, Any]:
    """Still sleeping after five hung-up tries (100 + 200 + 400 + 800 + 1600 ms)."""
    return {"scenario": "sleep", "ms": round(max(4500, 4 * timing.interval_ms) * timing.factor)}


def expect_slept(run: Run) -> Iterator[Finding]:
    yield from expect_completed({"slept": run.case.data_for(run.timing)["ms"]})(run)


def _lines(count: int) -> list[tuple[str, str, Any]]:
    return [("info", f"line {i}", {"i": i}) for i in range(1, count + 1)]


COMPLETE = (expect_completed({"ok": True}), expect_progress(50, "halfway"))
LEVELS = [(lv, lv, {"level": lv}) for lv in ("debug", "info", "warn", "error")]
EXT = ("auth",)
#: Unknown payload fields a worker must ignore (PAY-5): private, future, nested.
UNKNOWN_FIELDS = {
    "x-vendor": {"nested": [1, {"deep": None}]},
    "priority": 7,
    "labels": ["a", "b"],
    "futureKnobMs": 1234,
}
#: Just over the 10,000 messages REPLAY-6 says a buffer should hold.
BACK_PRESSURE_LOGS = 10_500
OVERFLOW_LOGS = 10_500

CASES: tuple[Case, ...] = (
    # -- core: what a v1 wrapper must do with a v1 server ------------------------
    Case(
        "core/lifecycle/complete",
        "started, progress, completed; exit 0",
        ("LIFE-1", "MSG-3", "MSG-7", "EXIT-2", "EXIT-3"),
        checks=COMPLETE,
    ),
    Case(
        "core/lifecycle/fail",
        "the job code's error becomes failed; exit non-zero",
        ("WRAP-2", "MSG-8", "EXIT-2"),
        {"scenario": "fail", "message": "boom: disk full"},
        checks=(expect_failed("boom: disk full"),),
    ),
    Case(
        "core/lifecycle/crash",
        "a crash exits with its own status and sends nothing more",
        ("FIX-2",),
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
        "core/framing/lone-surrogate",
        "lone surrogates become U+FFFD, a pair stays whole",
        ("FRAME-2", "WRAP-3"),
        {"scenario": "echo", "text": SURROGATE_TEXT, "value": [SURROGATE_TEXT]},
        checks=(
            expect_completed([SURROGATE_FIXED]),
            expect_logs([("info", SURROGATE_FIXED, None)]),
        ),
    ),
    Case(
        "core/framing/large-result",
        "a 1 MiB result arrives in one line",
        ("FRAME-1", "LIMIT-1"),
        {"scenario": "large", "bytes": 1 << 20},
        checks=(expect_completed("x" * (1 << 20)),),
    ),
    Case(
        "core/messages/levels",
        "one log at each level",
        ("MSG-6", "WRAP-1"),
        {"scenario": "levels"},
        checks=(expect_logs(LEVELS), expect_completed(None)),
    ),
    Case(
        "core/messages/logs",
        "logs arrive in order, once each",
        ("MSG-6",),
        {"scenario": "logs", "count": 50},
        checks=(expect_completed({"count": 50}), expect_logs(_lines(50))),
    ),
    Case(
        "core/messages/progress-burst",
        "200 progress messages as fast as possible",
        ("MSG-4", "WRAP-4"),
        {"scenario": "progress", "count": 200},
        checks=(expect_completed({"count": 200}), expect_progress_count(200)),
    ),
    Case(
        "core/payload/unknown-fields",
        "payload fields the worker does not know are ignored",
        ("PAY-5",),
        payload_extra=UNKNOWN_FIELDS,
        checks=COMPLETE,
    ),
    Case(
        "core/payload/env",
        "empty stdin: jobId, name, socketPath from EXTJOB_*, not the DONKEYLABS_* beside them",
        ("ENV-2", "FIX-1"),
        stdin="env",
        checks=COMPLETE,
    ),
    Case(
        "core/payload/partial",
        "a payload without jobId and socketPath: those two from EXTJOB_*",
        ("ENV-2",),
        stdin="partial",
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
        "core/payload/not-object",
        "a payload that is JSON but not an object (the environment is set): refused",
        ("PAY-6",),
        stdin="not-object",
    ),
    Case(
        "core/negotiation/nothing-usable",
        "a payload offering only a feature it does not know: behave as v1 (no hello, no seq)",
        ("NEG-3",),
        payload_extra={"protocolVersion": 1, "features": ["x-future"]},
        checks=COMPLETE,
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
        ("RECONNECT-1", "LIFE-3", "RECONNECT-2", "TRANS-3"),
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
        "core/reconnect/outage-past-window",
        "an outage longer than reconnectWindowMs while the job code runs: keep trying",
        ("RECONNECT-3",),
        _long_sleep,
        drive=restart_after_started,
        reconnect_window_ms=300,
        checks=(expect_slept, reconnected),
    ),
    Case(
        "core/reconnect/logs-during-outage",
        "what a v1 worker queued in an outage is not older than its repeated started",
        ("TIME-1",),
        {"scenario": "logs", "count": 20, "intervalMs": 60},
        drive=restart_after_started,
        checks=(expect_completed({"count": 20}), reconnected),
    ),
    Case(
        "core/reconnect/never-up",
        "no server at all: exit 1 once reconnectWindowMs passed, without running the job code",
        ("RECONNECT-6",),
        {"scenario": "crash", "code": JOB_CODE_RAN},
        connects=False,
        reconnect_window_ms=1500,
        payload_extra={"socketPath": NOWHERE},
        checks=(gave_up("RECONNECT-6", JOB_CODE_RAN),),
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
    Case(
        "core/streams/closed",
        "standard output and error closed, and the server restarts: the job goes on",
        ("WRAP-5",),
        _long_sleep,
        streams="closed",
        drive=restart_after_started,
        checks=(expect_slept, reconnected),
    ),
    Case(
        "core/streams/broken",
        "standard output and error are pipes nobody reads, and the server restarts",
        ("WRAP-5",),
        _long_sleep,
        streams="broken",
        drive=restart_after_started,
        checks=(expect_slept, reconnected),
    ),
    # -- auth -----------------------------------------------------------------------
    Case(
        "auth/hello/first",
        "hello with token and pid first, then wait for welcome",
        ("AUTH-2", "NEG-2"),
        requires=EXT,
        checks=COMPLETE,
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
        "auth/hello/no-welcome",
        "no welcome on the first connection: give up on it after max(2000, interval)",
        ("AUTH-2",),
        requires=EXT,
        drive=no_first_welcome,
        checks=(*COMPLETE, welcome_timed_out),
    ),
    Case(
        "auth/hello/refused",
        "every hello refused (auth): say so, exit 1 once the window passed, never run the job",
        ("AUTH-4",),
        {"scenario": "crash", "code": JOB_CODE_RAN},
        requires=EXT,
        drive=refuse_hello,
        reconnect_window_ms=1500,
        checks=(gave_up("AUTH-4", JOB_CODE_RAN), told_auth),
    ),
    Case(
        "auth/negotiation/unknown-feature",
        "an offered feature it does not know is ignored, not named in hello",
        ("NEG-1", "NEG-2"),
        requires=EXT,
        offer_extra=("x-future",),
        checks=COMPLETE,
    ),
    Case(
        "auth/negotiation/spool-without-replay",
        "spool offered without replay cannot be used: hello does not name it",
        ("NEG-2",),
        requires=EXT,
        offer_only=("auth", "spool", "control", "checkpoint"),
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
    Case(
        "auth/reconnect/backoff",
        "the harness hangs up on every try: waits of 100 ms, doubling",
        ("RECONNECT-1",),
        _backoff_sleep,
        requires=EXT,
        drive=hang_up_after_started,
        checks=(expect_slept, backed_off),
    ),
    Case(
        "auth/framing/crlf",
        "server lines that end in \\r\\n are read like any other",
        ("FRAME-1",),
        requires=EXT,
        drive=crlf_lines,
        checks=COMPLETE,
    ),
    Case(
        "auth/limits/large-welcome",
        "a welcome line of 1 MiB is read",
        ("LIMIT-3",),
        requires=EXT,
        drive=huge_welcome,
        checks=COMPLETE,
    ),
    Case(
        "auth/limits/result-too-large",
        "a result longer than maxLineBytes fails the job: result too large: N bytes",
        ("LIMIT-1",),
        {"scenario": "large", "bytes": SMALL_LINES + 4096},
        requires=EXT,
        payload_extra={"maxLineBytes": SMALL_LINES},
        checks=(result_too_large,),
    ),
    Case(
        "auth/limits/failure-too-large",
        "a failure too long for one line is cut, not dropped",
        ("LIMIT-1",),
        {"scenario": "fail", "message": "e" * (2 * SMALL_LINES)},
        requires=EXT,
        payload_extra={"maxLineBytes": SMALL_LINES},
        checks=(failure_shortened,),
    ),
    # -- replay ---------------------------------------------------------------------
    Case(
        "replay/seq/all-sequenced",
        "every sequenced message carries an increasing seq",
        ("REPLAY-1",),
        {"scenario": "logs", "count": 10},
        requires=(*EXT, "replay"),
        checks=(every_sequenced_has_seq, expect_completed({"count": 10})),
    ),
    Case(
        "replay/restart/unacked",
        "acks withheld, then a restart: the rest is replayed",
        ("REPLAY-4", "RECONNECT-4"),
        {"scenario": "logs", "count": 30, "intervalMs": 40},
        requires=(*EXT, "replay"),
        withhold_acks=True,
        drive=restart_after_started,
        checks=(replayed, expect_completed({"count": 30}), expect_logs(_lines(30))),
    ),
    Case(
        "replay/drop/lastseq",
        "acks withheld, then a drop: only what lastSeq does not cover is resent",
        ("REPLAY-4",),
        {"scenario": "logs", "count": 30, "intervalMs": 40},
        requires=(*EXT, "replay"),
        drive=drop_after_started,
        withhold_acks=True,
        checks=(replayed, expect_completed({"count": 30}), expect_logs(_lines(30))),
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
    Case(
        "replay/terminal/slow-ack",
        "the terminal ack comes 250 ms late: the worker waits for it before exiting",
        ("REPLAY-3",),
        requires=(*EXT, "replay"),
        drive=slow_terminal_ack,
        checks=COMPLETE,
    ),
    Case(
        "replay/buffer/back-pressure",
        "no acks while connected: a full buffer blocks the job code, nothing is dropped",
        ("REPLAY-6",),
        {"scenario": "logs", "count": BACK_PRESSURE_LOGS},
        requires=(*EXT, "replay"),
        drive=withhold_acks_until_blocked,
        timed=False,
        budget_s=30,
        checks=(
            expect_completed({"count": BACK_PRESSURE_LOGS}),
            expect_logs(_lines(BACK_PRESSURE_LOGS)),
            buffer_blocked,
        ),
    ),
    Case(
        "replay/buffer/overflow",
        "10,500 logs during an outage: the oldest may go, and one warn log says how many",
        ("REPLAY-6",),
        {"scenario": "logs", "count": OVERFLOW_LOGS},
        requires=(*EXT, "replay"),
        drive=outage_while_logging,
        timed=False,
        budget_s=30,
        checks=(expect_completed({"count": OVERFLOW_LOGS}), dropped_logs_counted),
    ),
    # -- control --------------------------------------------------------------------
    Case(
        "control/cancel/requested",
        "cancel reaches the job code, which ends the job within the deadline",
        ("CANCEL-3", "CANCEL-2"),
        _cancellable,
        requires=(*EXT, "control"),
        drive=send_cancel,
        checks=(expect_failed("cancelled"), cancelled_in_time, job_code_saw_cancel(fail)),
    ),
    Case(
        "control/cancel/sigterm",
        "SIGTERM to the process group reaches the job code as a cancel (a SHOULD)",
        ("CANCEL-3",),
        {"scenario": "cancel", "ms": 5000},
        requires=(*EXT, "control"),
        drive=sigterm_after_started,
        checks=(job_code_saw_cancel(nonstrict),),
    ),
    Case(
        "control/ignore/unknown-lines",
        "unknown server types, fields and errors are ignored",
        ("CTRL-6", "CTRL-5", "MSG-2"),
        _sleep,
        requires=(*EXT, "control"),
        drive=send_strange_lines,
        checks=(expect_slept,),
    ),
    Case(
        "control/ignore/garbage",
        "blank, non-JSON and cut server lines are skipped",
        ("FRAME-3",),
        _sleep,
        requires=(*EXT, "control"),
        drive=send_garbage,
        checks=(expect_slept,),
    ),
    Case(
        "control/read/flood",
        "the worker keeps reading 2 MB of server lines",
        ("CTRL-6",),
        _sleep,
        requires=(*EXT, "control"),
        drive=flood,
        checks=(expect_slept, drained),
    ),
    # -- spool ----------------------------------------------------------------------
    Case(
        "spool/give-up/result",
        "the server never comes back: every unacknowledged message is spooled",
        ("SPOOL-2", "RECONNECT-3"),
        {"scenario": "logs", "count": 6, "intervalMs": 150},
        requires=(*EXT, "replay", "spool"),
        drive=stop_for_good,
        reconnect_window_ms=1500,
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
        ("CKPT-2",),
        {"scenario": "checkpoint"},
        requires=(*EXT, "checkpoint"),
        payload_extra={"attempt": 2, "maxAttempts": 3, "checkpoint": {"step": 7}},
        checks=(expect_completed({"resumedFrom": {"step": 7}}),),
    ),
    Case(
        "checkpoint/null",
        "checkpoint: null means none (MSG-2): the job starts afresh",
        ("CKPT-2", "MSG-2"),
        {"scenario": "checkpoint"},
        requires=(*EXT, "checkpoint"),
        payload_extra={"attempt": 2, "maxAttempts": 3, "checkpoint": None},
        checks=(expect_failed("checkpoint saved"), checkpoint_saved),
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

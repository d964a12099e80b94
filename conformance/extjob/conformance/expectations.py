"""Expectations: the checks of single cases, each ``check(run) -> findings``.

They complement the checks every case runs (:mod:`.checks`) with what a
scenario or a fault makes the worker owe: the scenario's result (FIX-2), a
reconnect, a replay, a spool file, a checkpoint.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from itertools import islice, pairwise
from typing import Any

from extjob.protocol import (
    SEQUENCED_TYPES,
    decode,
    reconnect_delays_ms,
    terminal_ack_timeout_ms,
)

from . import checks
from .drives import cancel_deadline_ms
from .model import Finding, NotInjected, fail, nonstrict
from .run import Run

#: RECONNECT-1: the longest wait between two tries, before jitter.
MAX_WAIT_MS = max(islice(reconnect_delays_ms(), 10))

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
    """RECONNECT-1: a new connection soon after the fault; RECONNECT-2: alive
    meanwhile; LIFE-3 on it (v1)."""
    assert run.worker is not None
    if run.notes.get("not_injected"):
        raise NotInjected(run.notes["not_injected"])
    since = run.notes.get("back_at", run.notes.get("dropped_at"))
    if since is None:
        return  # no started: the common checks say why (LIFE-1, START-1)
    later = [c for c in run.server.connections if checks.opened_at(run, c.number) >= since]
    # Whatever the outage, the next try comes within one wait: at most 2000 ms
    # plus 20 % jitter (RECONNECT-1).
    bound = MAX_WAIT_MS * 1.2
    if not later:
        exited = run.worker.exited_at
        if exited is not None and run.terminal() is None:
            yield fail(
                "RECONNECT-2",
                "the worker died after its connection failed",
                "the job code keeps running; reconnect",
                f"exit {_how(run)} {checks.ms_between(run, since, exited):.0f} ms after the fault",
            )
            return
        yield fail(
            "RECONNECT-1",
            "the worker never reconnected",
            f"a new connection within {run.timing.explain(bound)}",
            "no new connection",
        )
        return
    delay = checks.ms_between(run, since, checks.opened_at(run, later[0].number))
    if delay > run.timing.upper(bound):
        yield fail(
            "RECONNECT-1",
            "the worker reconnected late",
            f"within {run.timing.explain(bound)}",
            f"{delay:.0f} ms",
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


def _how(run: Run) -> str:
    assert run.worker is not None and run.worker.returncode is not None
    code = run.worker.returncode
    return f"by signal {-code}" if code < 0 else f"with status {code}"


def backed_off(run: Run) -> Iterator[Finding]:
    """RECONNECT-1: retries 100, 200, 400, ... ms apart while the harness hangs up."""
    hung_up = run.notes.get("hang_up")
    if hung_up is None:
        return
    start, stop = hung_up
    tries = [
        checks.opened_at(run, c.number)
        for c in run.server.connections
        if start < checks.opened_at(run, c.number) <= stop
    ]
    # Times since the fault, against the sums of the waits: a try the harness
    # accepted late cannot make a later wait look short.
    nominal = 0
    for n, (at, wait) in enumerate(zip(tries, reconnect_delays_ms(), strict=False), 1):
        nominal += wait
        # A stall of the harness only makes a try look later: the lower bound
        # takes the raw time, the upper one leaves the stall out.
        since, raw = checks.ms_between(run, start, at), (at - start) * 1000
        low, high = run.timing.lower(nominal), run.timing.upper(nominal * 1.2)
        if not (low <= raw and since <= high):
            yield fail(
                "RECONNECT-1",
                f"try #{n} came {raw:.0f} ms after the fault",
                f"after waits of 100 ms, then doubling (at most 2000 ms, +0–20 % jitter): "
                f"{nominal} ms in all, between {low:.0f} and {high:.0f} ms",
                "tries at "
                + ", ".join(f"{checks.ms_between(run, start, t):.0f}" for t in tries)
                + " ms",
            )
            return
    if len(tries) < 3:
        yield fail(
            "RECONNECT-1",
            "too few retries while the harness hung up",
            "a try after 100, 200, 400, 800 ms",
            f"{len(tries)} tries in {checks.ms_between(run, start, stop):.0f} ms",
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
    for message in run.messages(*SEQUENCED_TYPES):
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
    """REPLAY-3: without an ack for the terminal message, the connection is
    failed after max(2000, heartbeatIntervalMs), not much earlier or later."""
    terminal = run.terminal()
    if run.notes.get("terminal_at") is None or terminal is None:
        return
    # From its receipt: the drive may notice it later on a busy loop.
    yield from _failed_over(run, "REPLAY-3", "the terminal ack", terminal.t)


def _failed_over(run: Run, requirement: str, what: str, since: float) -> Iterator[Finding]:
    """A reply (``what``) withheld since ``since``: the worker treats the
    connection as failed after max(2000, heartbeatIntervalMs) and tries a new
    one (REPLAY-3, AUTH-2), itself within a first wait of 100 ms (+20 %)."""
    wait = terminal_ack_timeout_ms(run.timing.advised_interval_ms)
    later = [c for c in run.server.connections if checks.opened_at(run, c.number) > since]
    if not later:
        yield fail(
            requirement,
            f"the worker kept waiting for {what}, which never came",
            f"a new connection within {run.timing.explain(wait + 120)}",
            f"{len(run.server.connections)} connection(s)",
        )
        return
    opened = checks.opened_at(run, later[0].number)
    delay = checks.ms_between(run, since, opened)
    if delay > run.timing.upper(wait + 120):
        yield fail(
            requirement,
            f"waited too long for {what} before treating the connection as failed",
            f"within {run.timing.explain(wait + 120)}",
            f"{delay:.0f} ms",
        )
    elif (opened - since) * 1000 < run.timing.lower(wait):
        yield nonstrict(
            requirement,
            f"gave up on {what} earlier than max(2000, heartbeatIntervalMs)",
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
    """SPOOL-2: hello, then every unacknowledged sequenced message, in a 0600 file."""
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
    if not messages or messages[0].type != "hello":
        yield fail(
            "SPOOL-2",
            "the spool file does not begin with hello",
            "hello",
            messages[0].body if messages else "empty file",
        )
        return
    yield from _spooled_hello(run, messages[0])
    yield from _spooled_messages(run, messages[1:])
    if not run.server.collect_spool(path.read_bytes()):
        yield fail(
            "SPOOL-2",
            "a server would reject this spool file (SPOOL-3: its hello fails AUTH-4, "
            "or names no spool in force, NEG-2)",
            "accepted",
            "rejected",
        )


def _spooled_hello(run: Run, hello: Any) -> Iterator[Finding]:
    """As on a connection (AUTH-2): the token, the worker's pid, the features it used."""
    assert run.worker is not None
    used = next((c.hello.body.get("features") for c in run.server.connections if c.hello), None)
    want = {"token": run.token, "pid": run.worker.pid, "features": used}
    got = {k: hello.body.get(k) for k in want}
    if got != want:
        yield fail("SPOOL-2", "the spool file's hello is not the connections' hello", want, got)


def _spooled_messages(run: Run, spooled: list[Any]) -> Iterator[Finding]:
    acked = run.server.acked_seq
    seqs = [m.seq for m in spooled]
    if any(s is None or s <= acked for s in seqs) or seqs != sorted(set(seqs)):
        yield fail(
            "SPOOL-2",
            "spooled messages must be the unacknowledged ones, in seq order, once each",
            f"seq > {acked}, increasing",
            seqs,
        )
        return
    sent = {m.seq: dict(m.body) for m in run.messages() if m.seq is not None and m.seq > acked}
    kept = {m.seq: dict(m.body) for m in spooled}
    lost = sorted(s for s in sent if kept.get(s) != sent[s])
    if lost:
        yield fail(
            "SPOOL-2",
            "messages the server received but never acknowledged are missing or changed",
            "every unacknowledged message, exactly as sent",
            [sent[s] for s in lost[:3]],
        )
    delivered = [m for m in run.messages("log") if m.seq is not None and m.seq <= acked]
    logs = [(m.body.get("message"), m.body.get("data")) for m in delivered] + [
        (m.body.get("message"), m.body.get("data")) for m in spooled if m.type == "log"
    ]
    count = run.case.data_for(run.timing).get("count", 0)
    want = [(f"line {i}", {"i": i}) for i in range(1, count + 1)]
    if logs != want:
        yield fail(
            "SPOOL-2",
            "acknowledged and spooled logs together are not the job's logs",
            want,
            logs,
        )
    if not spooled or not spooled[-1].is_terminal:
        yield fail(
            "SPOOL-2",
            "the terminal message is not in the spool file",
            "completed last",
            [m.type for m in spooled],
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


def gave_up(requirement: str, job_code_exit: int) -> Check:
    """RECONNECT-6 (and AUTH-4's "ends per RECONNECT-3"): a worker that never had
    a connection up exits 1 after one stderr line once the window passed,
    without running the job code (whose ``crash`` would exit ``job_code_exit``)."""

    def check(run: Run) -> Iterator[Finding]:
        assert run.worker is not None
        window = run.case.reconnect_window_ms
        if not run.worker.exited or run.worker.exited_at is None:
            yield fail(
                requirement,
                "the worker did not give up on its first connection",
                f"exit 1 about {window} ms after it started",
                "still running",
            )
            return
        code = run.worker.returncode
        if code == job_code_exit:
            yield fail(
                requirement,
                "the job code ran although no connection was ever up",
                "exit 1 without running the job code",
                f"exit status {code}: the crash scenario's",
            )
            return
        if code != 1:
            yield fail(requirement, "the wrong exit status", 1, code)
        took = checks.ms_between(run, run.worker.spawned_at, run.worker.exited_at)
        if (run.worker.exited_at - run.worker.spawned_at) * 1000 < run.timing.lower(window):
            yield fail(
                requirement,
                "gave up before reconnectWindowMs passed",
                f"≥ {window} ms of tries",
                f"exit {took:.0f} ms after the spawn",
            )
        if took > run.timing.startup_ms + run.timing.upper(window + MAX_WAIT_MS * 1.2):
            yield fail(
                requirement,
                "kept trying long after reconnectWindowMs",
                f"exit about {window} ms after it started",
                f"{took:.0f} ms",
            )
        if not run.worker.stderr().strip():
            yield fail(requirement, "nothing on standard error says why", "one line", "empty")

    return check


def told_auth(run: Run) -> Iterator[Finding]:
    """AUTH-4: a worker told ``auth`` SHOULD say so on standard error."""
    assert run.worker is not None
    if b"auth" not in run.worker.stderr().lower():
        yield nonstrict(
            "AUTH-4",
            "standard error does not mention the auth refusal",
            "a line naming auth",
            run.worker.stderr()[-200:].decode(errors="replace") or "empty",
        )


def welcome_timed_out(run: Run) -> Iterator[Finding]:
    """AUTH-2: no welcome within max(2000, heartbeatIntervalMs): the connection failed."""
    first = next((c for c in run.server.connections if c.hello is not None), None)
    if first is None:
        return  # no hello at all: the common check says so (AUTH-2)
    hello_at = next(e.t for e in run.entries("hello") if e.conn == first.number)
    yield from _failed_over(run, "AUTH-2", "a welcome", hello_at)


#: FIX-2 ``cancel``: what only the job code logs once it sees the request.
CANCEL_SEEN = "cancel requested"


def job_code_saw_cancel(verdict: Callable[..., Finding]) -> Check:
    """CANCEL-3: the job code, not the wrapper, ended the job: its log comes
    before its failure."""

    def check(run: Run) -> Iterator[Finding]:
        logs = [
            e
            for e in run.entries("log")
            if e.message and e.message.body.get("message") == CANCEL_SEEN
        ]
        terminal = run.terminal()
        if not logs or terminal is None or logs[0].t > terminal.t:
            yield verdict(
                "CANCEL-3",
                "the job code did not see the cancel request (its log is missing): "
                "the wrapper ended the job by itself or never told the job code",
                f"log {CANCEL_SEEN!r}, then failed 'cancelled'",
                [e.text for e in run.entries("log", "completed", "failed")][:3] or "nothing",
            )

    return check


def result_too_large(run: Run) -> Iterator[Finding]:
    """LIMIT-1: a result that cannot fit becomes failed "result too large: N bytes"."""
    failed = run.messages("failed")
    size = run.case.data_for(run.timing)["bytes"]
    limit = run.payload["maxLineBytes"]
    error = failed[0].body.get("error", "") if failed else ""
    match = re.fullmatch(r"result too large: (\d+) bytes", error)
    if not match or not limit < int(match.group(1)) <= size + 1024:
        yield fail(
            "LIMIT-1",
            "a result too large for one line must fail the job with its size",
            f"failed 'result too large: N bytes', N the completed line's size ({size}+ bytes)",
            error or [m.type for m in run.messages()],
        )


def failure_shortened(run: Run) -> Iterator[Finding]:
    """LIMIT-1: a failed line too long is cut: its error shortened to a prefix."""
    failed = run.messages("failed")
    text = run.case.data_for(run.timing)["message"]
    if not failed:
        yield fail(
            "LIMIT-1", "no failed arrived for an error too long for one line", "failed", "nothing"
        )
        return
    error = failed[0].body.get("error", "")
    if len(error) < 1024 or not text.startswith(error[:1024]) or len(error) > len(text):
        yield fail(
            "LIMIT-1",
            "a failed line that would be too long keeps a prefix of its error",
            "error: the first ≥ 1024 characters of the job's error",
            f"{len(error)} characters: {error[:80]!r}",
        )


#: REPLAY-6: the buffer a worker SHOULD have, in messages.
BUFFER_MESSAGES = 10_000


def buffer_blocked(run: Run) -> Iterator[Finding]:
    """REPLAY-6: a worker that blocked the job code did so only with a full buffer."""
    unacked = run.notes.get("unacked_when_blocked")
    count = run.case.data_for(run.timing)["count"]
    if unacked is not None and unacked < min(BUFFER_MESSAGES, count):
        yield nonstrict(
            "REPLAY-6",
            "the job code was blocked before 10,000 messages were unacknowledged",
            f"a buffer of at least {BUFFER_MESSAGES} messages (or 16 MiB)",
            f"{unacked} unacknowledged when the worker stopped sending",
        )


def dropped_logs_counted(run: Run) -> Iterator[Finding]:
    """REPLAY-6: logs dropped in an outage are counted by exactly one warn log;
    the rest arrive in order, once each."""
    count = run.case.data_for(run.timing)["count"]
    want = {f"line {i}": i for i in range(1, count + 1)}
    logs = _recorded(run, "log")
    kept = [want[m.body["message"]] for m in logs if m.body.get("message") in want]
    notices = [m for m in logs if m.body.get("message") not in want]
    if kept != sorted(set(kept)):
        yield fail(
            "REPLAY-6", "the job's logs arrived out of order or twice", "increasing", kept[:20]
        )
        return
    dropped = count - len(kept)
    if dropped == 0:
        if notices:
            yield fail("REPLAY-6", "a log nobody sent", "the job's logs only", notices[0].body)
        return
    said = [_dropped_count(m.body) for m in notices if m.body.get("level") == "warn"]
    # What the server recorded before the outage, but the worker had no ack
    # for yet, may be dropped by the worker and counted: its count may be
    # that much higher than what is missing, never lower.
    acked = _acked_before(run)
    recorded_before = sum(1 for m in logs if m.seq is not None and m.seq <= acked)
    counted = said[0] if len(said) == 1 and said[0] is not None else -1
    if len(notices) != 1 or not dropped <= counted <= dropped + recorded_before:
        yield fail(
            "REPLAY-6",
            f"{dropped} logs were dropped: one warn log must say how many",
            f'one log, level warn, counting {dropped} (data {{"dropped": {dropped}}}; up to '
            f"{recorded_before} more: those recorded before the outage)",
            [m.body for m in notices][:3] or "no such log",
        )


def _acked_before(run: Run) -> int:
    """The highest seq acknowledged before the first fault."""
    at = run.notes.get("faults", [float("inf")])[0]
    return max(
        (
            e.message.body["seq"]
            for e in run.transcript.entries
            if e.direction == "server" and e.t < at and e.message and e.message.type == "ack"
        ),
        default=0,
    )


def _recorded(run: Run, type_: str) -> list[Any]:
    """What a server that restarted at the first fault would have: what it had
    acknowledged before, and what came on later connections, once each."""
    at = run.notes.get("faults", [float("inf")])[0]
    acked = _acked_before(run)
    opened = {c.number: checks.opened_at(run, c.number) for c in run.server.connections}
    seen: set[int] = set()
    out = []
    for e in run.entries(type_):
        m = e.message
        if m is None or m.seq is None or m.seq in seen:
            continue
        if opened[e.conn] > at or m.seq <= acked:
            seen.add(m.seq)
            out.append(m)
    return sorted(out, key=lambda m: m.seq)


def _dropped_count(body: Any) -> int | None:
    data = body.get("data")
    if isinstance(data, dict) and isinstance(data.get("dropped"), int):
        return int(data["dropped"])
    numbers = re.findall(r"\d+", str(body.get("message", "")))
    return int(numbers[0]) if numbers else None

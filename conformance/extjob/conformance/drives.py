"""Drives: what the harness does while the worker runs (the fault injection).

Each drive is a coroutine ``drive(run)`` that waits for the moment a fault
belongs (``started`` seen, a connection welcomed), injects it through the fake
server, notes when in ``run.notes`` for the checks, and returns once the
worker has exited or the case's budget has run out. The only fixed pauses are
the faults themselves (an outage, a reading stall); everything else waits on
events with deadlines.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from typing import Any

from extjob.protocol import ack, cancel, error

from .run import Run

#: How long the harness keeps the listener away in the restart cases (s).
OUTAGE_S = 0.8
#: The cancel's deadlineMs (CANCEL-2): short, so that a late reaction shows.
CANCEL_DEADLINE_MS = 3000
#: A late terminal ack, inside the heartbeatIntervalMs a server may take (REPLAY-2).
TERMINAL_ACK_DELAY_S = 0.25
#: The outage while the job code fills the buffer (REPLAY-6), seconds.
OVERFLOW_OUTAGE_S = 2.0


async def just_wait(run: Run) -> None:
    await run.until_exit_or_budget()


async def _ready_for_fault(run: Run) -> bool:
    """Wait until the job runs; with ``withhold_acks``, until unacked logs pile up."""
    if run.case.withhold_acks:
        run.server.acking = False
    if not await run.until_type("started"):
        return False  # the worker's fault: the common checks say which
    ready = await run.until_welcomed() is not None
    if not ready:
        run.notes["not_injected"] = "no open connection to break once started had arrived"
    if ready and run.case.withhold_acks:
        await run.until(lambda: len(run.messages("log")) >= 3, 3)
    return ready


def fault(run: Run) -> float:
    """Note that the harness broke the worker's connection now (HB-2 excuses the
    outage until the worker is up again)."""
    at = run.transcript.now()
    run.notes.setdefault("faults", []).append(at)
    return at


def _connection_to_break(run: Run) -> bool:
    """Whether there is an open connection to break; if not, the fault cannot be
    injected, which is the harness's error (NotInjected), not the worker's."""
    if run.server.current() is None:
        run.notes["not_injected"] = "the worker's connection had already closed"
        return False
    return True


async def drop_after_started(run: Run) -> None:
    """Close the connection under the worker mid-job (TRANS-3, RECONNECT-1)."""
    if await _ready_for_fault(run) and _connection_to_break(run):
        run.server.drop_connections()
        run.server.acking = True
        run.notes["dropped_at"] = fault(run)
    await run.until_exit_or_budget()


async def hang_up_after_started(run: Run) -> None:
    """Drop the connection, then hang up on every try for a while: the worker's
    waits between tries show (RECONNECT-1)."""
    if await _ready_for_fault(run) and _connection_to_break(run):
        run.server.hang_up = True
        run.server.drop_connections()
        start = fault(run)
        tries = len(run.server.connections) + 5
        await run.until(lambda: len(run.server.connections) >= tries, 3.5)
        run.server.hang_up = False
        run.notes["hang_up"] = (start, run.transcript.now())
    await run.until_exit_or_budget()


async def restart_after_started(run: Run) -> None:
    """The listener goes away for a while and comes back at the same address."""
    if await _ready_for_fault(run) and _connection_to_break(run):
        fault(run)
        await run.server.stop("server stopped (restart)")
        await asyncio.sleep(run.timing.s(OUTAGE_S))  # the outage itself, not a wait
        run.server.acking = True
        await run.server.restart()
        run.notes["back_at"] = run.transcript.now()
    await run.until_exit_or_budget()


async def stop_for_good(run: Run) -> None:
    """The server goes away and never comes back (RECONNECT-3, SPOOL-2)."""
    if await run.until_type("started") and await run.until_welcomed():
        # Some messages acknowledged, then some received but not, then the rest
        # never sent: the spool file must hold exactly the last two kinds.
        await run.until(lambda: len(run.messages("log")) >= 2, 3)
        run.server.acking = False
        await run.until(lambda: len(run.messages("log")) >= 4, 3)
        fault(run)
        run.notes["gone_for_good"] = True
        await run.server.stop("server stopped for good")
    await run.until_exit_or_budget()


async def withhold_terminal_ack(run: Run) -> None:
    """The terminal message is not acknowledged on its first connection (REPLAY-3)."""
    run.server.ack_terminal = False
    if await run.until(lambda: run.terminal() is not None, 5):
        run.notes["terminal_at"] = run.transcript.now()
        run.server.ack_terminal = True  # a replay on a new connection gets its ack
    await run.until_exit_or_budget()


async def stall_reading(run: Run) -> None:
    """A slow server: it stops reading for a while (the worker must not die)."""
    if await run.until_type("started"):
        run.server.reading.clear()
        await asyncio.sleep(run.timing.s(1.0))  # the stall itself
        run.server.reading.set()
    await run.until_exit_or_budget()


async def send_cancel(run: Run) -> None:
    conn = await run.until_welcomed()
    if conn is not None and await run.until_type("started"):
        run.server.send(conn, cancel(run.job_id, "requested", cancel_deadline_ms(run)))
        run.notes["cancel_at"] = run.transcript.now()
    await run.until_exit_or_budget()


def cancel_deadline_ms(run: Run) -> int:
    return round(CANCEL_DEADLINE_MS * run.timing.factor)


async def send_strange_lines(run: Run) -> None:
    """Unknown types, unknown fields and an informational error (CTRL-5, CTRL-6)."""
    conn = await run.until_welcomed()
    if conn is not None and await run.until_type("started"):
        for line in _strange_lines(run.job_id, run.server.acked_seq):
            run.server.send(conn, line)
    await run.until_exit_or_budget()


def _strange_lines(job_id: str, acked: int) -> list[dict[str, Any]]:
    envelope = {"jobId": job_id, "timestamp": 1}
    return [
        {"type": "x-vendor-note", **envelope, "note": "ignore me"},
        {"type": "reconfigure", **envelope, "heartbeatIntervalMs": 1},  # a future type
        {**error(job_id, "invalid_message", "informational only", "SRV-6"), "x-extra": [1, 2]},
        {**ack(job_id, max(acked, 1)), "x-extra": {"nested": True}},  # a repeated ack
    ]


async def send_garbage(run: Run) -> None:
    """Lines a receiver must skip (FRAME-3): blank, not JSON, not an object, cut."""
    conn = await run.until_welcomed()
    if conn is not None and await run.until_type("started"):
        for line in (b"\n", b"  \t \n", b"not json\n", b"[1, 2]\n", b'{"type": \n', b"\xff\xfe\n"):
            await run.server.send_raw(conn, line, run.timing.s(1))
    await run.until_exit_or_budget()


async def flood(run: Run) -> None:
    """Two megabytes of server lines the worker must read and ignore (CTRL-6, LIMIT-3)."""
    conn = await run.until_welcomed()
    if conn is not None and await run.until_type("started"):
        big = {"type": "x-padding", "jobId": run.job_id, "timestamp": 1, "pad": "p" * 1_000_000}
        line = (json.dumps(big) + "\n").encode()
        drained = all([await run.server.send_raw(conn, line, run.timing.s(3)) for _ in range(2)])
        run.notes["drained"] = drained
    await run.until_exit_or_budget()


async def slow_welcome(run: Run) -> None:
    """Welcome only after a pause: nothing but hello may arrive before it (AUTH-2)."""
    run.server.welcome_delay_s = run.timing.s(0.5)
    await just_wait(run)


async def no_first_welcome(run: Run) -> None:
    """The first hello gets no answer: the worker must give up on it (AUTH-2)."""
    run.server.unwelcomed = {1}
    await just_wait(run)


async def refuse_hello(run: Run) -> None:
    """Every hello is answered with an auth error and the connection closed (AUTH-4)."""
    run.server.refuse = True
    await just_wait(run)


async def slow_terminal_ack(run: Run) -> None:
    """The terminal ack comes late but in time (REPLAY-2 allows heartbeatIntervalMs)."""
    run.server.terminal_ack_delay_s = TERMINAL_ACK_DELAY_S
    await just_wait(run)


async def crlf_lines(run: Run) -> None:
    """Every server line ends in \\r\\n, which a receiver must tolerate (FRAME-1)."""
    run.server.newline = b"\r\n"
    await just_wait(run)


async def huge_welcome(run: Run) -> None:
    """A welcome of exactly 1 MiB: a worker that cannot read it never starts (LIMIT-3)."""
    run.server.welcome_bytes = 1 << 20
    await just_wait(run)


async def sigterm_after_started(run: Run) -> None:
    """SIGTERM to the process group, as KILL-1 does: a SHOULD-cancel (CANCEL-3)."""
    assert run.worker is not None
    if await run.until_type("started"):
        fault(run)  # the group's helpers (socat, say) may go with it
        os.killpg(run.worker.pid, signal.SIGTERM)
        run.transcript.event("SIGTERM sent to the process group")
        run.notes["cancel_at"] = run.transcript.now()
    await run.until_exit_or_budget()


async def withhold_acks_until_blocked(run: Run) -> None:
    """No acks while connected until the job code is blocked (or everything is in):
    a full buffer must block the job code, never drop (REPLAY-6)."""
    run.server.acking = False
    total = run.case.data_for(run.timing)["count"] + 1  # started and the logs
    if await run.until_type("started"):
        while run.server.recorded_seq < total and run.terminal() is None:
            if not await run.until(_more_than(run, run.server.recorded_seq), 1.0):
                break  # blocked: nothing new for a second
        run.notes["unacked_when_blocked"] = run.server.recorded_seq - run.server.acked_seq
        run.transcript.event(f"acks resume: {run.server.recorded_seq} unacknowledged")
        run.server.acking = True
        conn = run.server.current()
        if conn is not None:
            run.server.ack_up_to(conn, run.server.recorded_seq)
    await run.until_exit_or_budget()


def _more_than(run: Run, seq: int) -> Callable[[], bool]:
    return lambda: run.server.recorded_seq > seq


async def outage_while_logging(run: Run) -> None:
    """The server stops reading at its welcome, so nothing the job code logs is
    acknowledged, then goes away long enough for a full buffer, then comes back
    (REPLAY-6: drop the oldest logs, say how many). Waiting for ``started``
    instead raced a fast worker, which had sent (and seen acked) every log
    before the outage began, so that nothing had to be dropped."""
    run.server.deaf_after_welcome = True
    if await run.until_welcomed() is not None and _connection_to_break(run):
        await asyncio.sleep(run.timing.s(0.25))  # the job code fills its buffer
        fault(run)
        await run.server.stop("server stopped (restart)")
        await asyncio.sleep(run.timing.s(OVERFLOW_OUTAGE_S))  # the outage itself
        run.server.deaf_after_welcome = False
        await run.server.restart()
        run.notes["back_at"] = run.transcript.now()
    await run.until_exit_or_budget()

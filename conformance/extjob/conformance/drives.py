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
from typing import Any

from extjob.protocol import ack, cancel, error

from .run import Run

#: How long the harness keeps the listener away in the restart cases (s).
OUTAGE_S = 0.8
#: The cancel's deadlineMs (CANCEL-2): short, so that a late reaction shows.
CANCEL_DEADLINE_MS = 3000


async def just_wait(run: Run) -> None:
    await run.until_exit_or_budget()


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
    await run.until_exit_or_budget()


async def restart_after_started(run: Run) -> None:
    """The listener goes away for a while and comes back at the same address."""
    if await _ready_for_fault(run):
        await run.server.stop("server stopped (restart)")
        await asyncio.sleep(run.timing.s(OUTAGE_S))  # the outage itself, not a wait
        run.server.acking = True
        await run.server.restart()
        run.notes["back_at"] = run.transcript.now()
    await run.until_exit_or_budget()


async def stop_for_good(run: Run) -> None:
    """The server goes away and never comes back (RECONNECT-3, SPOOL-2)."""
    run.server.acking = False
    if await run.until_type("started") and await run.until_welcomed():
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

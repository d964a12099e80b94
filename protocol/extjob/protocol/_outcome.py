"""How an attempt ends: EXIT-1's table with CANCEL-4, TIMEOUT-1 and CKPT-4.

One pure function, :func:`outcome`, decides it from what the server knows:
the terminal message it recorded (if any), how the process ended (if it
has), and what the server itself did to the attempt (a cancel request, a
timeout or a heartbeat kill). The server stores and emits what it says.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ._timing import retry_delay_ms

Status = Literal["completed", "failed", "cancelled"]

#: The warning logged when a worker exits 0 without a terminal message (EXIT-1, v1).
EXITED_0_WITHOUT_TERMINAL = "exited 0 without a terminal message"
LOST_AFTER_RESTART = "worker gone after a server restart: no terminal message, exit status unknown"
EXIT_STATUS_UNKNOWN = (
    "worker exited without a terminal message; exit status unknown "
    "(re-adopted after a server restart, not a child of this server)"
)


@dataclass(frozen=True)
class Exit:
    """How the worker process ended. ``status``: the exit code, or minus the
    signal number that killed it; None when it cannot be known (a worker
    re-adopted after a restart is not our child). ``lost``: it was gone when
    a restarted server looked for it."""

    status: int | None
    lost: bool = False


@dataclass(frozen=True)
class Retry:
    """CKPT-4's inputs: this attempt's number, the limit and the backoff."""

    attempt: int = 1
    max_attempts: int = 1
    backoff_ms: int = 1000
    max_backoff_ms: int = 60_000


@dataclass(frozen=True)
class Outcome:
    """What becomes of the attempt (and so of the job).

    ``retry_in_ms``: the wait before the next attempt (CKPT-4), None when
    there is none. ``warning``: a note for the job's log (EXIT-1).
    ``lost``: announce ``job.lost``.
    """

    status: Status
    result: Any = None
    error: str | None = None
    stack: str | None = None
    retry_in_ms: int | None = None
    warning: str | None = None
    lost: bool = False


def describe_exit(status: int) -> str:
    """EXIT-1's wording for a non-zero exit status (minus a signal number)."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"Process killed by signal {name}"
    return f"Process exited with code {status}"


def timed_out(timeout_ms: int) -> str:
    """TIMEOUT-1's failure."""
    return f"Job timed out after {timeout_ms} ms"


def heartbeat_timeout(silence_ms: int) -> str:
    """STALE-2's failure."""
    return f"Heartbeat timeout: no message for {silence_ms} ms"


def outcome(
    terminal: Mapping[str, Any] | None,
    exit: Exit | None,
    *,
    cancel_requested: bool = False,
    failure: str | None = None,
    retryable: bool = True,
    retry: Retry = Retry(),
) -> Outcome:
    """Decide the attempt's outcome.

    ``terminal``: the terminal message recorded (None: none). ``exit``: None
    while the process still runs (the terminal message decides alone, SRV-4).
    ``cancel_requested``: a user asked to cancel (CANCEL-4: the job ends
    cancelled unless it completed). ``failure``: what the server did that
    fails the attempt whatever the worker says (TIMEOUT-1, STALE-2, a
    failed spawn). ``retryable``: False when no retry may follow whatever
    the worker says (a failed spawn).
    """
    warning = None
    if terminal is not None and terminal["type"] == "completed":
        if exit is not None and exit.status:
            warning = f"completed, then: {describe_exit(exit.status)}"
        return Outcome("completed", result=terminal.get("result"), warning=warning)
    stack = None
    lost = False
    if terminal is not None:  # failed
        error = failure or terminal["error"]
        stack = terminal.get("stack")
        retryable = retryable and terminal.get("retryable") is not False
    elif exit is None:
        raise ValueError("no terminal message and no exit: nothing to decide yet")
    elif exit.lost:
        error, lost = failure or LOST_AFTER_RESTART, True
    elif failure is not None:
        error = failure
    elif cancel_requested:
        return Outcome("cancelled")
    elif exit.status == 0:
        return Outcome("completed", warning=EXITED_0_WITHOUT_TERMINAL)
    elif exit.status is None:
        error = EXIT_STATUS_UNKNOWN
    else:
        error = describe_exit(exit.status)
    if cancel_requested:  # CANCEL-4: whatever the failure (kept, to show), never retried
        return Outcome("cancelled", error=error, stack=stack, lost=lost)
    retry_in_ms = None
    if retryable and retry.attempt < retry.max_attempts:
        retry_in_ms = retry_delay_ms(retry.attempt, retry.backoff_ms, retry.max_backoff_ms)
    return Outcome("failed", error=error, stack=stack, retry_in_ms=retry_in_ms, lost=lost)

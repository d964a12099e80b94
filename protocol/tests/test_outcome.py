"""EXIT-1's table, with CANCEL-4, TIMEOUT-1 and CKPT-4, as one pure function."""

from __future__ import annotations

import signal

import pytest

from extjob.protocol import Exit, Outcome, Retry, heartbeat_timeout, outcome, timed_out

COMPLETED = {"type": "completed", "jobId": "j", "timestamp": 1, "result": {"n": 1}}
FAILED = {"type": "failed", "jobId": "j", "timestamp": 1, "error": "boom", "stack": "tb"}
RETRY = Retry(attempt=1, max_attempts=3, backoff_ms=1000, max_backoff_ms=60_000)


@pytest.mark.parametrize(
    ("terminal", "exit", "expected"),
    [
        (COMPLETED, None, Outcome("completed", result={"n": 1})),
        (COMPLETED, Exit(0), Outcome("completed", result={"n": 1})),
        (
            COMPLETED,
            Exit(3),
            Outcome(
                "completed", result={"n": 1}, warning="completed, then: Process exited with code 3"
            ),
        ),
        (FAILED, None, Outcome("failed", error="boom", stack="tb", retry_in_ms=1000)),
        (FAILED, Exit(0), Outcome("failed", error="boom", stack="tb", retry_in_ms=1000)),
        (None, Exit(0), Outcome("completed", warning="exited 0 without a terminal message")),
        (None, Exit(7), Outcome("failed", error="Process exited with code 7", retry_in_ms=1000)),
        (
            None,
            Exit(-signal.SIGKILL),
            Outcome("failed", error="Process killed by signal SIGKILL", retry_in_ms=1000),
        ),
    ],
)
def test_exit_1_the_outcome_table(
    terminal: dict | None, exit: Exit | None, expected: Outcome
) -> None:
    assert outcome(terminal, exit, retry=RETRY) == expected


def test_exit_1_a_status_that_cannot_be_known_fails() -> None:
    result = outcome(None, Exit(None), retry=RETRY)
    assert result.status == "failed" and "exit status unknown" in (result.error or "")


def test_exit_1_nothing_to_decide_while_running_without_a_terminal() -> None:
    with pytest.raises(ValueError):
        outcome(None, None)


def test_reconnect_5_a_worker_gone_after_a_restart_is_lost() -> None:
    result = outcome(None, Exit(None, lost=True), retry=RETRY)
    assert (result.status, result.lost) == ("failed", True)
    assert "server restart" in (result.error or "")


def test_cancel_4_a_cancelled_job_ends_cancelled_and_is_not_retried() -> None:
    assert outcome(FAILED, Exit(1), cancel_requested=True, retry=RETRY) == Outcome(
        "cancelled", error="boom", stack="tb"
    )
    assert outcome(None, Exit(0), cancel_requested=True, retry=RETRY) == Outcome("cancelled")
    assert outcome(None, Exit(1), cancel_requested=True, retry=RETRY).status == "cancelled"


def test_cancel_4_unless_it_completed() -> None:
    assert outcome(COMPLETED, Exit(0), cancel_requested=True).status == "completed"


def test_timeout_1_a_timeout_is_a_failure_that_is_retried() -> None:
    result = outcome(FAILED, Exit(1), failure=timed_out(500), retry=RETRY)
    assert (result.status, result.error, result.retry_in_ms) == (
        "failed",
        "Job timed out after 500 ms",
        1000,
    )
    assert outcome(None, Exit(-15), failure=timed_out(500)).error == "Job timed out after 500 ms"


def test_stale_2_the_heartbeat_kill_is_the_failure() -> None:
    result = outcome(None, Exit(-signal.SIGTERM), failure=heartbeat_timeout(2100))
    assert result.error == "Heartbeat timeout: no message for 2100 ms"


def test_ckpt_4_retried_while_attempts_are_left_and_not_retryable_false() -> None:
    last = Retry(attempt=3, max_attempts=3)
    assert outcome(FAILED, None, retry=last).retry_in_ms is None
    second = Retry(attempt=2, max_attempts=3, backoff_ms=1000, max_backoff_ms=60_000)
    assert outcome(FAILED, None, retry=second).retry_in_ms == 2000
    final = {**FAILED, "retryable": False}
    assert outcome(final, None, retry=RETRY).retry_in_ms is None
    assert (
        outcome(None, Exit(None), failure="spawn failed", retryable=False, retry=RETRY).retry_in_ms
        is None
    )

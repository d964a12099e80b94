"""Timing rules and defaults of SPEC.md section 6 and 12, as pure functions."""

from __future__ import annotations

from collections.abc import Iterator

PROTOCOL_VERSION = 1

DEFAULT_HEARTBEAT_TIMEOUT_MS = 30_000
V1_HEARTBEAT_INTERVAL_MS = 5_000
DEFAULT_KILL_GRACE_MS = 5_000
DEFAULT_CANCEL_DEADLINE_MS = 10_000
DEFAULT_RECONNECT_WINDOW_MS = 60_000
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
DEFAULT_RETRY_BACKOFF_MS = 1_000
DEFAULT_MAX_RETRY_BACKOFF_MS = 60_000
EXIT_AFTER_TERMINAL_MS = 1_000

RECONNECT_FIRST_DELAY_MS = 100
RECONNECT_MAX_DELAY_MS = 2_000


def heartbeat_interval_ms(heartbeat_timeout_ms: int) -> int:
    """HB-1: the interval a server advises for a given heartbeat timeout."""
    return max(10, heartbeat_timeout_ms // 3)


def stale_slack_ms(heartbeat_timeout_ms: int) -> int:
    """STALE-1: how late after the timeout a server may notice staleness."""
    return max(100, heartbeat_timeout_ms // 10)


def reconnect_delays_ms() -> Iterator[int]:
    """RECONNECT-1: 100, 200, 400, 800, 1600, 2000, 2000, ... (before jitter)."""
    delay = RECONNECT_FIRST_DELAY_MS
    while True:
        yield delay
        delay = min(delay * 2, RECONNECT_MAX_DELAY_MS)


def retry_delay_ms(attempt: int, backoff_ms: int, max_backoff_ms: int) -> int:
    """CKPT-4: the wait before the attempt after ``attempt`` (1-based)."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, not {attempt}")
    return int(min(backoff_ms * 2 ** (attempt - 1), max_backoff_ms))


def terminal_ack_timeout_ms(heartbeat_interval: int) -> int:
    """REPLAY-3: how long a worker waits for the ack of its terminal message."""
    return max(2_000, heartbeat_interval)


def exit_grace_ms(heartbeat_interval: int) -> int:
    """EXIT-3: how long after a recorded terminal message a server waits for
    the worker to exit before it terminates it (KILL-1)."""
    return terminal_ack_timeout_ms(heartbeat_interval) + EXIT_AFTER_TERMINAL_MS

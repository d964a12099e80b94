"""The timing rules of SPEC section 6 as numbers."""

from __future__ import annotations

from itertools import islice

import pytest

from extjob.protocol import (
    heartbeat_interval_ms,
    reconnect_delays_ms,
    retry_delay_ms,
    stale_slack_ms,
    terminal_ack_timeout_ms,
)


def test_hb_1_interval_is_a_third_of_the_timeout_and_never_below_10_ms() -> None:
    assert heartbeat_interval_ms(30_000) == 10_000
    assert heartbeat_interval_ms(300) == 100
    assert heartbeat_interval_ms(20) == 10


def test_stale_1_slack_is_a_tenth_and_at_least_100_ms() -> None:
    assert stale_slack_ms(30_000) == 3_000
    assert stale_slack_ms(500) == 100


def test_reconnect_1_waits_double_up_to_two_seconds() -> None:
    assert list(islice(reconnect_delays_ms(), 8)) == [100, 200, 400, 800, 1600, 2000, 2000, 2000]


def test_ckpt_4_retry_backoff_doubles_up_to_the_cap() -> None:
    assert [retry_delay_ms(n, 1000, 5000) for n in (1, 2, 3, 4)] == [1000, 2000, 4000, 5000]
    with pytest.raises(ValueError):
        retry_delay_ms(0, 1000, 5000)


def test_replay_3_terminal_ack_wait() -> None:
    assert terminal_ack_timeout_ms(100) == 2000
    assert terminal_ack_timeout_ms(10_000) == 10_000

"""A stall of the harness excuses only what it made the harness notice late.

Timing verdicts leave out how late the harness noticed the end of a wait; a
stall earlier in the wait must not shorten it, or a worker that waits far too
long for its terminal ack (REPLAY-3) passes whenever the machine was busy at
some point in the wait (a clean-clone CI run saw it: 3.5 s less a 559 ms stall
that had ended 266 ms before the worker gave up).
"""

from __future__ import annotations

import pytest

from extjob.conformance.transcript import STALL_TICK_S, Transcript


def stalls(*spans: tuple[float, float]) -> Transcript:
    """A transcript whose harness stalled over each (from, to) span, in seconds."""
    transcript = Transcript()
    transcript.stalls = [(to, to - start) for start, to in spans]
    return transcript


def test_replay_3_a_stall_that_ended_before_the_wait_did_excuses_nothing() -> None:
    assert stalls((2.90, 3.46)).late_by(0.21, 3.73) == 0.0


def test_replay_3_the_stall_the_end_was_noticed_in_is_left_out() -> None:
    assert stalls((2.90, 3.46)).late_by(0.21, 3.46) == pytest.approx(0.56)
    # noticed in the same turn of the loop, just before the stall was
    assert stalls((2.90, 3.47)).late_by(0.21, 3.46) == pytest.approx(0.56)


def test_replay_3_a_run_of_stalls_counts_as_one_and_only_within_the_wait() -> None:
    tick = STALL_TICK_S
    run = stalls((1.0, 1.5), (1.5 + tick / 2, 2.0), (2.0 + tick / 2, 2.4), (3.0, 3.2))
    assert run.late_by(0.0, 2.4) == pytest.approx(1.4 - tick)
    assert run.late_by(1.2, 2.4) == pytest.approx(1.2 - tick)
    assert run.late_by(0.0, 3.2) == pytest.approx(0.2)  # the gap before it ends the run


def test_replay_3_a_stall_that_began_after_the_end_is_not_counted() -> None:
    assert stalls((1.0, 1.3), (2.01, 2.04)).late_by(0.0, 2.0) == 0.0

"""The lifecycle table of SPEC 5.1, one test per rule."""

from __future__ import annotations

from typing import Any

import pytest

from extjob.protocol import Attempt, AttemptState, RemoteProtocolError, Verdict, decode_object


def msg(type_: str, job_id: str = "j", **fields: Any) -> Any:
    return decode_object({"type": type_, "jobId": job_id, "timestamp": 1, **fields})


def started_attempt(replay: bool | None = None) -> Attempt:
    attempt = Attempt("j")
    attempt.receive(msg("started", **({"seq": 1} if replay else {})), replay)
    return attempt


def test_srv_2_started_moves_a_spawned_attempt_to_running() -> None:
    attempt = Attempt("j")
    assert (
        attempt.receive(msg("hello", token="t" * 16, protocolVersion=1, features=[], pid=1)).action
        == "liveness"
    )
    assert attempt.state is AttemptState.SPAWNED
    assert attempt.receive(msg("started")).action == "record"
    assert attempt.state is AttemptState.RUNNING


def test_life_2_a_heartbeat_before_started_is_tolerated_and_started_still_counts() -> None:
    attempt = Attempt("j")
    verdict = attempt.receive(msg("heartbeat"))
    assert (verdict.action, verdict.tolerated) == ("liveness", "LIFE-2")
    # The tolerated heartbeat does not stand in for started (SRV-2): the
    # real started is recorded, not taken for a v1 reconnect.
    assert attempt.state is AttemptState.SPAWNED
    assert attempt.receive(msg("started")) == Verdict("record")
    assert attempt.state is AttemptState.RUNNING


def test_life_3_a_v1_started_again_is_a_reconnect() -> None:
    attempt = started_attempt()
    assert attempt.receive(msg("started")).action == "reconnect"


def test_life_1_a_second_sequenced_started_is_rejected() -> None:
    attempt = started_attempt(replay=True)
    with pytest.raises(RemoteProtocolError) as raised:
        attempt.receive(msg("started", seq=2), replay=True)
    assert raised.value.requirement == "LIFE-1"


@pytest.mark.parametrize("terminal", ["completed", "failed"])
def test_life_4_nothing_is_recorded_after_the_terminal_message(terminal: str) -> None:
    attempt = started_attempt()
    extra = {"error": "x"} if terminal == "failed" else {}
    assert attempt.receive(msg(terminal, **extra)).action == "record"
    assert attempt.state is AttemptState.FINISHED
    with pytest.raises(RemoteProtocolError) as raised:
        attempt.receive(msg("completed"))
    assert (raised.value.code, raised.value.requirement) == ("duplicate_terminal", "LIFE-4")
    with pytest.raises(RemoteProtocolError) as raised:
        attempt.receive(msg("log", level="info", message="late"))
    assert raised.value.code == "out_of_order"


def test_srv_5_a_message_for_another_job_is_rejected_and_changes_nothing() -> None:
    attempt = started_attempt()
    with pytest.raises(RemoteProtocolError) as raised:
        attempt.receive(msg("completed", job_id="other"))
    assert raised.value.code == "wrong_job"
    assert attempt.state is AttemptState.RUNNING


def test_replay_5_a_seq_already_recorded_is_a_duplicate_even_after_the_end() -> None:
    attempt = started_attempt(replay=True)
    log = msg("log", seq=2, level="info", message="a")
    assert attempt.receive(log, replay=True).action == "record"
    assert attempt.receive(log, replay=True).action == "duplicate"
    assert attempt.receive(msg("completed", seq=5), replay=True).action == "record"
    assert attempt.receive(msg("completed", seq=5), replay=True).action == "duplicate"
    assert attempt.last_seq == 5


def test_replay_1_with_replay_a_sequenced_type_without_seq_is_rejected() -> None:
    attempt = started_attempt(replay=True)
    with pytest.raises(RemoteProtocolError) as raised:
        attempt.receive(msg("log", level="info", message="a"), replay=True)
    assert raised.value.requirement == "REPLAY-1"


def test_neg_2_without_replay_on_the_connection_seq_means_nothing() -> None:
    attempt = started_attempt()
    log = msg("log", seq=1_000_000, level="info", message="a")
    assert attempt.receive(log, replay=False).action == "record"
    assert attempt.last_seq == 0  # a later seq 1 of a replay connection still counts


def test_msg_2_private_types_only_show_liveness() -> None:
    attempt = started_attempt()
    assert attempt.receive(msg("x-metrics", cpu=1)).action == "liveness"

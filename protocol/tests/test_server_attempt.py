"""The server's side of an attempt, without sockets: bytes in, replies out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from extjob.protocol import (
    Binding,
    LocalProtocolError,
    ServerAttempt,
    ServerConnection,
    ack,
    encode,
)

TOKEN = "t" * 22
JOB = "j_1"


def line(type_: str, job_id: str = JOB, **fields: Any) -> bytes:
    return encode({"type": type_, "jobId": job_id, "timestamp": 1, **fields})


def hello(features: list[str] | None = None, token: str = TOKEN, job_id: str = JOB) -> bytes:
    return line(
        "hello",
        job_id,
        token=token,
        protocolVersion=1,
        features=["auth", "replay", "control", "spool", "checkpoint"]
        if features is None
        else features,
        pid=42,
    )


def replies(conn: ServerConnection) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in conn.data_to_send().splitlines()]


def attempt(**kwargs: Any) -> ServerAttempt:
    return ServerAttempt(JOB, TOKEN, now=0.0, **kwargs)


def extended(a: ServerAttempt, features: list[str] | None = None) -> ServerConnection:
    conn = a.connect()
    conn.receive_data(hello(features), now=1.0)
    assert conn.binding is Binding.EXTENDED
    conn.data_to_send()  # the welcome
    return conn


def test_auth_2_an_accepted_hello_is_welcomed_with_the_features_in_force() -> None:
    a = attempt(recorded_seq=0)
    conn = a.connect()
    intake = conn.receive_data(hello(), now=1.0)
    assert not intake and intake.refused is None
    (welcome,) = replies(conn)
    assert welcome["type"] == "welcome"
    assert welcome["features"] == ["auth", "replay", "control", "spool", "checkpoint"]
    assert welcome["lastSeq"] == 0
    assert welcome["heartbeatIntervalMs"] == a.heartbeat_interval_ms


@pytest.mark.parametrize(
    ("named", "in_force"),
    [
        (["auth", "spool"], ["auth"]),  # spool requires replay
        (["replay", "control"], []),  # everything requires auth
        (["auth", "replay", "spool", "x-future"], ["auth", "replay", "spool"]),
    ],
)
def test_neg_2_features_are_those_offered_named_and_complete(
    named: list[str], in_force: list[str]
) -> None:
    conn = attempt().connect()
    conn.receive_data(hello(named), now=1.0)
    assert list(conn.features) == in_force
    assert replies(conn)[0]["features"] == in_force


def test_neg_2_only_what_the_server_offers_is_in_force() -> None:
    conn = attempt(offered=("auth", "replay")).connect()
    conn.receive_data(hello(), now=1.0)
    assert conn.features == ("auth", "replay")


def test_auth_4_a_wrong_token_is_answered_with_auth_and_refused() -> None:
    a = attempt()
    conn = a.connect()
    intake = conn.receive_data(hello(token="x" * 22) + line("started", seq=1), now=1.0)
    assert intake.refused is not None and intake.refused.requirement == "AUTH-4"
    assert conn.binding is Binding.REFUSED
    assert not intake.messages  # nothing after the refused hello counts
    (err,) = replies(conn)
    assert (err["type"], err["code"]) == ("error", "auth")
    assert a.last_receipt == 0.0  # a refused line is no sign of life


def test_auth_4_the_token_of_an_earlier_attempt_is_fenced_off() -> None:
    earlier = "e" * 22
    a = ServerAttempt(JOB, TOKEN, now=0.0)
    intake = a.connect().receive_data(hello(token=earlier), now=1.0)
    assert intake.refused is not None and intake.refused.requirement == "AUTH-4"


def test_auth_4_a_hello_naming_another_job_is_refused() -> None:
    intake = attempt().connect().receive_data(hello(job_id="other"), now=1.0)
    assert intake.refused is not None and intake.refused.requirement == "AUTH-4"


def test_auth_3_a_connection_is_bound_to_its_first_line_and_stays_bound() -> None:
    a = attempt()
    conn = a.connect()
    intake = conn.receive_data(line("started") + line("log", "other", level="info", message="x"), 1)
    assert conn.binding is Binding.V1
    assert [m.type for m in intake.messages] == ["started"]
    assert intake.rejected[0].error.requirement == "SRV-5"


def test_auth_3_once_authenticated_a_tokenless_connection_cannot_write() -> None:
    a = attempt()
    real = extended(a)
    real.receive_data(line("started", seq=1), now=1.0)
    forger = a.connect()
    intake = forger.receive_data(line("log", seq=1_000_000, level="info", message="x"), now=2.0)
    assert intake.refused is not None and intake.refused.requirement == "AUTH-3"
    assert not intake.messages
    assert forger.data_to_send() == b""  # never written to (NEG-3)
    later = real.receive_data(line("completed", seq=2, result=1), now=3.0)
    assert [m.type for m in later.messages] == ["completed"]


def test_auth_3_a_tokenless_connection_bound_before_the_hello_is_cut_off_by_it() -> None:
    a = attempt()
    early = a.connect()
    assert early.receive_data(line("heartbeat"), now=0.5).refused is None
    assert early.binding is Binding.V1  # nothing told it apart from a v1 worker, yet
    real = extended(a)
    real.receive_data(line("started", seq=1), now=1.0)
    forged = early.receive_data(line("log", seq=1_000_000, level="info", message="x"), now=2.0)
    assert forged.refused is not None and forged.refused.requirement == "AUTH-3"
    assert not forged.messages and early.data_to_send() == b""  # closed, never written to
    later = real.receive_data(line("completed", seq=2, result=1), now=3.0)
    assert [m.type for m in later.messages] == ["completed"]


def test_auth_5_a_server_may_require_hello() -> None:
    conn = attempt(require_hello=True).connect()
    intake = conn.receive_data(line("started"), now=1.0)
    assert intake.refused is not None and intake.refused.requirement == "AUTH-5"
    assert conn.data_to_send() == b""


def test_neg_3_a_v1_connection_is_never_written_to() -> None:
    a = attempt()
    conn = a.connect()
    intake = conn.receive_data(line("started") + b"not json\n", now=1.0)
    assert intake.rejected and conn.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        conn.send({"type": "cancel", "jobId": JOB, "timestamp": 1})
    a.recorded(intake)
    assert conn.data_to_send() == b""


def test_replay_2_the_ack_comes_only_once_recorded() -> None:
    a = attempt()
    conn = extended(a)
    intake = conn.receive_data(line("started", seq=1) + line("progress", seq=2, percent=5), 1)
    assert [m.seq for m in intake.messages] == [1, 2]
    assert conn.data_to_send() == b""
    a.recorded(intake)
    assert replies(conn) == [{"type": "ack", "jobId": JOB, "timestamp": replies_ts(), "seq": 2}]


def replies_ts() -> Any:
    class Any_:
        def __eq__(self, other: object) -> bool:
            return isinstance(other, int)

    return Any_()


def test_replay_5_only_a_newer_seq_is_recorded_and_a_duplicate_is_acked_again() -> None:
    a = attempt()
    conn = extended(a)
    a.recorded(conn.receive_data(line("started", seq=1), 1.0))
    conn.data_to_send()
    again = conn.receive_data(line("started", seq=1), 2.0)
    assert not again.messages and again.sequenced
    a.recorded(again)
    assert replies(conn)[0]["seq"] == 1


def test_msg_2_a_seq_on_a_heartbeat_is_ignored_not_taken_for_recorded() -> None:
    # A seq on a type that is never sequenced is a field the schema does not
    # know: taken for the latest recorded seq, it would drop the real
    # messages below it as duplicates; of another type, it would crash.
    a = attempt()
    conn = extended(a)
    lines = (
        line("started", seq=1)
        + line("heartbeat", seq=99)
        + line("heartbeat", seq="abc")
        + line("progress", seq=2, percent=5)
    )
    intake = conn.receive_data(lines, 1.0)
    assert [m.type for m in intake.messages] == ["started", "progress"]
    assert not intake.rejected


def test_msg_5_a_heartbeat_is_a_sign_of_life_and_nothing_else() -> None:
    # The fields other types define mean nothing on a heartbeat: it brings no
    # progress, log or terminal to record and owes no ack, and it is valid.
    a = attempt()
    conn = extended(a)
    a.recorded(conn.receive_data(line("started", seq=1), 1.0))
    conn.data_to_send()  # the ack of started
    fields = {"percent": 50, "message": "m", "level": "error", "result": 1, "error": "e"}
    intake = conn.receive_data(line("heartbeat", **fields), 2.0)
    assert not intake and not intake.rejected and not intake.sequenced
    assert (intake.terminal, a.terminal, a.last_receipt) == (None, None, 2.0)
    assert conn.data_to_send() == b""


def test_replay_5_a_failed_store_rolls_back_so_that_the_replay_is_recorded() -> None:
    a = attempt()
    conn = extended(a)
    a.recorded(conn.receive_data(line("started", seq=1), 1.0))
    lost = conn.receive_data(line("log", seq=2, level="info", message="x"), 2.0)
    assert a.not_recorded(lost) == [conn]
    assert not a.is_current(lost)
    with pytest.raises(LocalProtocolError):
        a.recorded(lost)
    conn.connection_lost()
    again = a.connect()
    again.receive_data(hello(), 3.0)
    assert replies(again)[0]["lastSeq"] == 1
    replay = again.receive_data(line("log", seq=2, level="info", message="x"), 3.0)
    assert [m.seq for m in replay.messages] == [2]


def test_ctrl_2_welcome_names_what_is_stored_not_what_is_in_flight() -> None:
    a = attempt()
    conn = extended(a)
    conn.receive_data(line("started", seq=1), 1.0)  # not recorded yet
    second = a.connect()
    second.receive_data(hello(), 2.0)
    assert replies(second)[0]["lastSeq"] == 0


def test_replay_1_a_sequenced_type_without_seq_is_rejected_with_an_error() -> None:
    a = attempt()
    conn = extended(a)
    intake = conn.receive_data(line("started"), 1.0)
    assert intake.rejected[0].error.requirement == "REPLAY-1"
    assert replies(conn)[0]["requirement"] == "REPLAY-1"


def test_limit_1_an_oversized_line_is_discarded_and_the_connection_stays() -> None:
    a = attempt(max_line_bytes=200)
    conn = extended(a)
    intake = conn.receive_data(b"x" * 500 + b"\n" + line("started", seq=1), 1.0)
    assert intake.rejected[0].error.code == "line_too_long"
    assert [m.type for m in intake.messages] == ["started"]
    assert replies(conn)[0]["code"] == "line_too_long"


def test_frame_3_bad_lines_are_discarded_blank_lines_ignored() -> None:
    conn = attempt().connect()
    intake = conn.receive_data(b"\n  \n{\n[1]\n" + line("started"), 1.0)
    assert [r.error.requirement for r in intake.rejected] == ["FRAME-1", "FRAME-1"]
    assert [m.type for m in intake.messages] == ["started"]


def test_frame_1_a_line_cut_off_by_the_end_of_the_connection_is_reported() -> None:
    conn = attempt().connect()
    conn.receive_data(b'{"type":', 1.0)
    exc = conn.close_input()
    assert exc is not None and exc.requirement == "FRAME-1"


def test_ctrl_6_errors_are_dropped_for_a_worker_that_does_not_read() -> None:
    conn = extended(attempt())
    conn.receive_data(b"{\n", 1.0, backlog=1 << 20)
    assert conn.data_to_send() == b""
    assert conn.overwhelmed(32 << 20) and not conn.overwhelmed(1000)


def test_life_2_a_heartbeat_before_started_does_not_swallow_started() -> None:
    conn = attempt().connect()
    intake = conn.receive_data(line("heartbeat") + line("started"), 1.0)
    assert [m.type for m in intake.messages] == ["started"]  # SRV-2 sees it
    assert intake.tolerated[0][0] == "LIFE-2"
    assert not intake.reconnected


def test_life_3_a_v1_started_again_on_a_new_connection_is_a_reconnect() -> None:
    a = attempt()
    first = a.connect()
    a.recorded(first.receive_data(line("started"), 1.0))
    first.connection_lost()
    again = a.connect().receive_data(line("started") + line("progress", percent=1), 2.0)
    assert again.reconnected
    assert [m.type for m in again.messages] == ["progress"]


def test_life_3_a_v1_worker_connecting_per_message_is_not_reconnecting() -> None:
    a = attempt()
    first = a.connect()
    a.recorded(first.receive_data(line("started"), 1.0))
    first.connection_lost()
    for n in range(3):
        conn = a.connect()
        assert not conn.receive_data(line("progress", percent=n), 2.0).reconnected
        conn.connection_lost()


def test_reconnect_5_the_first_connection_after_a_restart_is_a_reconnect() -> None:
    a = attempt(adopted=True, recorded_seq=3)
    conn = a.connect()
    conn.receive_data(hello(), 1.0)
    assert replies(conn)[0]["lastSeq"] == 3
    a2 = attempt(adopted=True)
    assert a2.connect().receive_data(line("progress", percent=1), 1.0).reconnected


def test_extended_reconnect_after_a_failed_connection() -> None:
    a = attempt()
    conn = extended(a)
    conn.connection_lost()
    again = a.connect()
    assert again.receive_data(hello(), 2.0).reconnected


def test_cancel_1_with_control_a_cancel_is_sent_without_it_kill_1() -> None:
    a = attempt()
    conn = extended(a)
    assert a.cancel("timeout", 3000) == "sent"
    (msg,) = replies(conn)
    assert (msg["type"], msg["reason"], msg["deadlineMs"]) == ("cancel", "timeout", 3000)
    assert a.cancel("requested", 3000) == "none"  # already cancelling
    assert a.cancel_requested  # but a user's request still counts (CANCEL-4)

    v1 = attempt()
    v1.connect().receive_data(line("started"), 1.0)
    assert v1.cancel("requested", 3000) == "kill"

    lost = attempt()
    extended(lost).connection_lost()
    assert lost.cancel("requested", 3000) == "kill"

    nocontrol = attempt()
    extended(nocontrol, ["auth", "replay"])
    assert nocontrol.cancel("requested", 3000) == "kill"


def test_srv_1_every_valid_line_is_a_sign_of_life_at_receipt_time() -> None:
    a = attempt(heartbeat_timeout_ms=1000)
    conn = a.connect()
    conn.receive_data(line("started"), now=5.0)
    assert a.last_receipt == 5.0
    conn.receive_data(b"junk\n", now=9.0)
    assert a.last_receipt == 5.0
    conn.receive_data(line("heartbeat", timestamp=0), now=6.0)  # HB-3: not its timestamp
    assert a.last_receipt == 6.0


def test_stale_1_once_per_silence_and_stale_2_at_twice_the_timeout() -> None:
    a = attempt(heartbeat_timeout_ms=1000)
    assert a.check_silence(0.5) == (None, 500, 1.0)
    assert a.check_silence(1.0).action == "stale"
    assert a.check_silence(1.5) == (None, 1500, 2.0)  # not again in the same silence
    assert a.check_silence(2.0).action == "kill"
    a.connect().receive_data(line("started"), 2.5)  # a line ends the silence
    assert a.check_silence(3.6).action == "stale"


def test_stale_3_a_server_that_was_not_running_reads_first_and_does_not_blame_the_worker() -> None:
    a = attempt(heartbeat_timeout_ms=1000)
    conn = a.connect()
    conn.receive_data(line("started"), now=0.0)
    assert a.check_silence(0.0).next_at == 1.0
    # The server is stopped from 0.2 s to 2.7 s; the worker heartbeats on into its socket.
    late = a.check_silence(2.7)  # asked for 1.0: 1.7 s late, far beyond STALE-1's 100 ms
    assert late.action is None and late.next_at == pytest.approx(2.75)  # read first
    conn.receive_data(line("heartbeat") * 12, now=2.72)  # what waited on the socket
    again = a.check_silence(2.75)
    assert again.action is None and again.next_at == pytest.approx(3.72)


def test_stale_3_the_time_the_server_was_not_running_is_not_silence_of_a_dead_worker() -> None:
    a = attempt(heartbeat_timeout_ms=1000)
    a.connect().receive_data(line("started"), now=0.0)
    assert a.check_silence(0.0).next_at == 1.0
    assert a.check_silence(2.5).action is None  # stopped for about 1.5 s: credited
    stale = a.check_silence(2.55)  # nothing came: 1.05 s of silence while running
    assert stale.action == "stale" and stale.next_at == pytest.approx(3.5)
    kill = a.check_silence(3.5)
    assert (kill.action, kill.silence_ms) == ("kill", 2000)


def test_stale_3_a_look_within_stale_1s_slack_is_not_a_stall() -> None:
    a = attempt(heartbeat_timeout_ms=1000)
    assert a.check_silence(0.0).next_at == 1.0
    assert a.check_silence(1.09).action == "stale"  # 90 ms late: the worker's silence


def test_start_1_the_silence_before_the_first_line_counts_from_the_spawn() -> None:
    a = ServerAttempt(JOB, TOKEN, now=10.0, heartbeat_timeout_ms=1000)
    assert a.check_silence(11.0).action == "stale"
    assert a.check_silence(12.0).action == "kill"


def test_exit_3_no_stale_watch_after_the_terminal_and_a_deadline_for_the_exit() -> None:
    a = attempt(heartbeat_timeout_ms=3000)
    conn = a.connect()
    a.recorded(conn.receive_data(line("started") + line("completed"), 1.0))
    assert a.terminal is not None
    assert a.check_silence(100.0) == (None, 99_000, None)
    assert a.exit_deadline(1.0) == 1.0 + (2000 + 1000) / 1000


def test_spool_3_a_spool_file_is_applied_like_a_connection() -> None:
    a = attempt()
    conn = extended(a)
    a.recorded(conn.receive_data(line("started", seq=1), 1.0))
    conn.connection_lost()
    spool = hello() + line("started", seq=1) + line("completed", seq=2, result=7).rstrip(b"\n")
    intake = a.apply_spool(spool, 5.0)
    assert intake is not None and [m.seq for m in intake.messages] == [2]  # REPLAY-5
    assert not intake.reconnected
    a.recorded(intake)
    assert a.terminal is not None and a.terminal["result"] == 7


@pytest.mark.parametrize(
    "spool",
    [
        hello(token="w" * 22) + line("completed", seq=1),  # AUTH-4
        line("completed", seq=1),  # no hello first
        hello(["auth", "spool"]) + line("completed", seq=1),  # spool needs replay (NEG-2)
        b"",
    ],
)
def test_spool_3_a_spool_file_that_fails_the_hello_check_is_rejected(spool: bytes) -> None:
    a = attempt()
    assert a.apply_spool(spool, 1.0) is None
    assert a.terminal is None and a.lifecycle.last_seq == 0


@pytest.mark.parametrize("job_id", ["j_1", 'quo"te\\ \u00e9\U0001f600'])
def test_ctrl_3_the_fast_ack_line_is_the_encoded_ack(job_id: str) -> None:
    a = ServerAttempt(job_id, TOKEN, now=0.0)
    line = a._ack_line(7)
    body = orjson.loads(line)
    assert line == encode(ack(job_id, 7) | {"timestamp": body["timestamp"]})

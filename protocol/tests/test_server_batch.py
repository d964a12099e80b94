"""The fast path of a read (``decode_all``, ``Attempt.receive_all``) decides
nothing of its own: a read of many lines gives what the same lines give one
read each (the way one by one), for any mix of good and bad lines. FRAME-1
(each line is one JSON value: never parsed across lines), SRV-6 (each bad
line rejected with its reason), REPLAY-1/5 (seq), SRV-5, LIFE-4, MSG-10."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from extjob.protocol import Attempt, AttemptState, ServerAttempt, decode, decode_all, encode

TOKEN = "t" * 22
JOB = "j_1"
LIMIT = 300  # max_line_bytes: small, so that oversized lines are cheap to make


def _line(type_: str, job_id: str = JOB, **fields: Any) -> bytes:
    return encode({"type": type_, "jobId": job_id, "timestamp": 1, **fields})[:-1]


def _hello(features: list[str]) -> bytes:
    return _line("hello", token=TOKEN, protocolVersion=1, features=features, pid=1)


seqs = st.integers(1, 12)
lines = st.one_of(
    seqs.map(lambda s: _line("progress", seq=s, percent=s)),
    st.just(_line("progress", percent=5, message="m")),
    seqs.map(lambda s: _line("log", seq=s, level="info", message="x")),
    seqs.map(lambda s: _line("checkpoint", seq=s, data={"at": s})),
    st.just(_line("heartbeat")),
    seqs.map(lambda s: _line("heartbeat", seq=s)),  # a heartbeat with seq: the long way
    seqs.map(lambda s: _line("started", seq=s)),
    st.just(_line("started")),
    seqs.map(lambda s: _line("completed", seq=s, result=s)),
    st.just(_line("failed", error="e")),
    st.just(_line("x-private", seq=3)),
    st.just(_line("progress", "other", seq=20, percent=1)),  # SRV-5
    st.just(_line("progress", seq=30, percent=101)),  # a schema violation
    st.just(_line("nonsense", seq=31)),  # MSG-10
    st.just(_hello(["auth", "replay"])),
    st.sampled_from([b"", b"  ", b"not json", b"[1]", b"7", b"{}", b'{"type":["progress"]}']),
    # two values on one line, and a line pair that only together is one object
    st.just(_line("progress", seq=40, percent=1) + b"," + _line("progress", seq=41, percent=2)),
    st.just(b'{"type":"progress","jobId":"j_1",'),
    st.just(b'"timestamp":1,"seq":42,"percent":3}'),
    st.just(b"{" + b'"x":"' + b"y" * LIMIT + b'"}'),  # LIMIT-1
    seqs.map(lambda s: _line("progress", seq=s, percent=s) + b"\r"),
)


def _plain(kind: str, seq: int) -> bytes:
    fields: dict[str, Any] = {
        "progress": {"percent": seq},
        "log": {"level": "warn", "message": str(seq)},
        "checkpoint": {"data": [seq]},
        "heartbeat": {},
    }[kind]
    return _line(kind, **fields) if kind == "heartbeat" else _line(kind, seq=seq, **fields)


@st.composite
def mostly_plain(draw: st.DrawFn) -> list[bytes]:
    """What the fast path takes (new seqs in order), with at most one odd line in it."""
    n = draw(st.integers(2, 12))
    seqs = sorted(draw(st.sets(st.integers(2, 60), min_size=n, max_size=n)))
    kinds = st.sampled_from(["progress", "progress", "log", "checkpoint", "heartbeat"])
    body = [_plain(draw(kinds), seq) for seq in seqs]
    if draw(st.booleans()):
        body.insert(draw(st.integers(0, n)), draw(lines))
    return body


def _attempt() -> ServerAttempt:
    return ServerAttempt(JOB, TOKEN, now=0.0, max_line_bytes=LIMIT)


def _replies(data: bytes) -> list[dict[str, Any]]:
    """What the connection wrote, acks aside (one per read), timestamps aside."""
    out = [orjson.loads(raw) for raw in data.splitlines()]
    return [{k: v for k, v in o.items() if k != "timestamp"} for o in out if o["type"] != "ack"]


def _outcome(reads: list[bytes], first: bytes) -> dict[str, Any]:
    attempt = _attempt()
    conn = attempt.connect(trace=True)
    taken: dict[str, list[Any]] = {
        "messages": [],
        "received": [],
        "rejected": [],
        "tolerated": [],
        "trace": [],
    }
    flags = []
    for data in [first, *reads]:
        intake = conn.receive_data(data, 1.0)
        taken["messages"] += [m.body for m in intake.messages]
        taken["received"] += [m.body for m in intake.received]
        taken["rejected"] += [
            (r.error.code, r.error.requirement, str(r.error), r.line) for r in intake.rejected
        ]
        taken["tolerated"] += [(rule, m.body) for rule, m in intake.tolerated]
        taken["trace"] += [
            (t.line, t.message and t.message.body, t.error and str(t.error)) for t in intake.trace
        ]
        flags.append((intake.sequenced, intake.terminal, bool(intake.refused)))
        if intake.messages:
            attempt.recorded(intake)
    return {
        **taken,
        "sequenced": any(f[0] for f in flags),
        "terminal": [f[1] for f in flags if f[1] is not None],
        "refused": any(f[2] for f in flags),
        "state": (attempt.lifecycle.state, attempt.lifecycle.last_seq, attempt.recorded_seq),
        "replies": _replies(conn.data_to_send()),
        "binding": conn.binding,
    }


@settings(max_examples=400, deadline=None)
@given(
    first=st.sampled_from(
        [
            _hello(["auth", "replay"]) + b"\n" + _line("started", seq=1) + b"\n",
            _hello(["auth"]) + b"\n" + _line("started") + b"\n",
            _line("started") + b"\n",  # v1
        ]
    ),
    body=st.one_of(st.lists(lines, min_size=2, max_size=12), mostly_plain()),
)
def test_frame_1_srv_6_a_read_taken_whole_is_its_lines_read_one_by_one(
    first: bytes, body: list[bytes]
) -> None:
    whole = _outcome([b"".join(line + b"\n" for line in body)], first)
    one_by_one = _outcome([line + b"\n" for line in body], first)
    assert whole == one_by_one


def test_srv_3_a_read_of_plain_progress_takes_the_fast_path_and_all_of_it() -> None:
    """The common case: nothing unusual, every message recorded (none coalesced
    away in the core: the store and the events coalesce, SRV-3), in order."""
    attempt = _attempt()
    conn = attempt.connect()
    conn.receive_data((_hello(["auth", "replay"]) + b"\n"), 1.0)
    attempt.recorded(conn.receive_data(_line("started", seq=1) + b"\n", 1.0))
    read = b"".join(_line("progress", seq=s, percent=s) + b"\n" for s in range(2, 50))
    read += _line("heartbeat") + b"\n" + _line("completed", seq=50) + b"\n"
    intake = conn.receive_data(read, 2.0)
    assert [m.seq for m in intake.messages] == list(range(2, 51))
    assert len(intake.received) == 50 and intake.terminal is not None
    assert attempt.lifecycle.state is AttemptState.FINISHED


def test_frame_1_decode_all_is_decode_of_each_line_or_nothing() -> None:
    good = [_line("progress", seq=2, percent=1), _line("log", level="info", message="x")]
    assert decode_all(good) == [decode(line) for line in good]
    mixed = [*good, _line("heartbeat", seq=9)]  # MSG-2: no seq on a heartbeat
    assert decode_all(mixed) == [decode(line) for line in mixed]
    # Each line is parsed on its own: a line pair that is one object when
    # joined, or two objects on one line, is not taken.
    assert decode_all([b'{"type":"heartbeat",', b'"jobId":"j","timestamp":1}']) is None
    assert decode_all([good[0] + b"," + good[1], good[0]]) is None
    for bad in (b"", b"[1]", _line("x-mine"), _line("progress", percent=101)):
        assert decode_all([good[0], bad]) is None


def test_replay_5_receive_all_takes_only_new_ordinary_messages() -> None:
    def run(*seqs: int | None, state: AttemptState = AttemptState.RUNNING) -> bool:
        attempt = Attempt(JOB, 3, state)
        messages = [
            decode(
                _line("progress", percent=1) if s is None else _line("progress", seq=s, percent=1)
            )
            for s in seqs
        ]
        taken = attempt.receive_all(messages, True)
        assert attempt.last_seq == (seqs[-1] if taken else 3)
        return taken

    assert run(4, 5, 9)
    assert not run(3, 4)  # a duplicate (REPLAY-5)
    assert not run(5, 5)
    assert not run(6, 5)
    assert not run(4, None)  # REPLAY-1
    assert not run(4, 5, state=AttemptState.SPAWNED)  # LIFE-2 tolerance: one by one


def test_replay_2_a_released_intake_is_still_recorded_and_acked() -> None:
    """The server lets a read's messages go before its commit (Intake.release):
    the ack and the recorded seq come out the same."""
    attempt = _attempt()
    conn = attempt.connect()
    conn.receive_data(_hello(["auth", "replay"]) + b"\n", 1.0)
    conn.data_to_send()
    read = _line("started", seq=1) + b"\n" + _line("progress", seq=2, percent=1) + b"\n"
    intake = conn.receive_data(read, 2.0)
    intake.release()
    assert intake and not intake.messages and not intake.received
    attempt.recorded(intake)
    assert attempt.recorded_seq == 2
    assert [r["seq"] for r in map(orjson.loads, conn.data_to_send().splitlines())] == [2]

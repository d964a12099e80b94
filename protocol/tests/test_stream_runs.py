"""A run taken whole (``StreamChecker.apply_run``) is the same as its lines
checked one by one (``StreamChecker.check``), the one place of the stream
rules: same problems (none), same state after. Random streams close to the
edges: seq repeated or going back, timestamps out of order, a second jobId,
hellos, reconnects, terminals, a seq on a heartbeat, v1 and replay streams.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extjob.protocol import (
    LineBuffer,
    OversizedLine,
    Problem,
    RemoteProtocolError,
    StreamChecker,
    decode,
    decode_object,
    encode,
    message_of,
    ordinary_run,
    runs,
)
from extjob.validate import Validator

EXTRA: dict[str, dict[str, Any]] = {
    "hello": {"token": "t" * 22, "protocolVersion": 1, "features": ["replay"], "pid": 1},
    "progress": {"percent": 5},
    "log": {"level": "info", "message": "m"},
    "checkpoint": {"data": {}},
    "failed": {"error": "e"},
}
COMMON = ["progress", "log", "heartbeat", "checkpoint"]
RARE = ["hello", "started", "completed", "failed", "x-metrics"]
SEQUENCED = {"started", "progress", "log", "checkpoint", "completed", "failed"}


def body(type_: str, job_id: str, timestamp: int, seq: int | None) -> dict[str, Any]:
    made = {"type": type_, "jobId": job_id, "timestamp": timestamp, **EXTRA.get(type_, {})}
    if seq is not None:
        made["seq"] = seq
    decode_object(made)  # only valid messages: the stream rules come after the schemas
    return made


def now_and_then(draw: st.DrawFn, one_in: int) -> bool:
    # sampled_from draws uniformly (integers favours its bounds) and
    # shrinks towards its first element: the ordinary case.
    return draw(st.sampled_from([False] * (one_in - 1) + [True]))


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Mostly what a worker sends (hello, started, then progress, logs and
    heartbeats on one clock with seq + 1), now and then a step off it: so
    that runs of ordinary messages meet every rule at their edges."""
    sequenced = draw(st.booleans())
    stream = []
    if draw(st.booleans()):
        stream.append(body("hello", "j", 0, None))
    if not now_and_then(draw, 10):
        stream.append(body("started", "j", 0, 1 if sequenced else None))
    seq = clock = 1
    job_id = "j"
    for _ in range(draw(st.integers(0, 70))):
        rare = now_and_then(draw, 25)
        type_ = draw(st.sampled_from(RARE if rare else COMMON))
        clock = max(
            0, clock + (draw(st.sampled_from([0, 2, -1, -4])) if now_and_then(draw, 12) else 1)
        )
        timestamp = clock
        if type_ == "heartbeat" and now_and_then(draw, 6):  # another thread's clock: late
            timestamp = max(0, clock - draw(st.sampled_from([1, 3])))
        if now_and_then(draw, 40):
            job_id = "k" if job_id == "j" else "j"  # STREAM-1, from here on
        if now_and_then(draw, 50):
            sequenced = not sequenced  # STREAM-6, from here on
        carries = sequenced if type_ in SEQUENCED else now_and_then(draw, 15)
        if now_and_then(draw, 40):
            carries = not carries  # STREAM-6, once
        seq = max(1, seq + (draw(st.sampled_from([0, 2, -1, -6])) if now_and_then(draw, 15) else 1))
        stream.append(body(type_, job_id, timestamp, seq if carries else None))
    return stream


def one_by_one(stream: list[dict[str, Any]]) -> tuple[list[tuple[int, Problem]], StreamChecker]:
    checker = StreamChecker()
    found = []
    for index, body in enumerate(stream):
        found += [(index, p) for p in checker.check(message_of(body), encode(body))]
    return found, checker


def state(checker: StreamChecker) -> dict[str, Any]:
    seen = dict(vars(checker))
    attempt = seen.pop("_attempt")
    if attempt is not None:
        seen["_attempt"] = (attempt.job_id, attempt.last_seq, attempt.state)
    return seen


def by_parts(
    stream: list[dict[str, Any]], cuts: list[tuple[int, int]]
) -> tuple[list[tuple[int, Problem]], StreamChecker]:
    checker = StreamChecker()
    lines = [encode(body) for body in stream]
    found = []
    for start, end in cuts:
        run = ordinary_run(stream[start:end])
        if run is not None and checker.apply_run(run, lines[start:end]):
            continue
        for index in range(start, end):
            found += [(index, p) for p in checker.check(message_of(stream[index]), lines[index])]
    return found, checker


@given(streams(), st.lists(st.integers(0, 80), max_size=16))
@settings(max_examples=250)
def test_stream_4_5_6_a_run_taken_whole_is_the_same_as_its_lines_one_by_one(
    stream: list[dict[str, Any]], marks: list[int]
) -> None:
    bounds = sorted({0, len(stream), *(m for m in marks if m < len(stream))})
    cuts = list(pairwise(bounds))
    expected, reference = one_by_one(stream)
    found, checker = by_parts(stream, cuts)
    assert found == expected
    assert state(checker) == state(reference)


@given(streams())
@settings(max_examples=150)
def test_stream_4_5_6_runs_cut_a_batch_without_changing_a_verdict(
    stream: list[dict[str, Any]],
) -> None:
    parts = runs(stream, [body["type"] for body in stream])  # the types as decode_bodies has them
    ends = [0] + [end for _, end, _ in parts]
    assert [(s, e) for s, e, _ in parts] == list(pairwise(ends))
    assert ends[-1] == len(stream)  # every line, in order, once
    expected, reference = one_by_one(stream)
    found, checker = by_parts(stream, [(s, e) for s, e, _ in parts])
    assert found == expected
    assert state(checker) == state(reference)


def ts(type_: str, timestamp: int, seq: int | None = None, job_id: str = "j") -> dict[str, Any]:
    return body(type_, job_id, timestamp, seq)


# A run right after a message it conflicts with: each rule apply_run checks.
EDGES = {
    "STREAM-1": [ts("started", 1, 1), ts("progress", 2, 2, job_id="k")],
    "STREAM-4": [ts("started", 1, 1), ts("progress", 2, 2), ts("log", 3, 2)],
    "STREAM-5 sequenced": [ts("started", 5, 1), ts("progress", 3, 2)],
    "STREAM-5 unsequenced": [ts("started", 1, 1), ts("heartbeat", 5), ts("heartbeat", 4)],
    "STREAM-6": [ts("started", 1, 1), ts("progress", 2)],
    "STREAM-6 v1": [ts("started", 1), ts("progress", 2, 2)],
    "LIFE-1": [ts("hello", 1), ts("progress", 2, 2)],
    "STREAM-3": [ts("started", 1, 1), ts("completed", 2, 2), ts("log", 3, 3)],
}


@pytest.mark.parametrize("stream", EDGES.values(), ids=EDGES.keys())
def test_stream_rules_a_run_after_a_conflicting_message_is_checked_line_by_line(
    stream: list[dict[str, Any]],
) -> None:
    expected, reference = one_by_one(stream)
    assert expected  # each edge is a problem
    found, checker = by_parts(stream, [(0, len(stream) - 1), (len(stream) - 1, len(stream))])
    assert found == expected
    assert state(checker) == state(reference)


def test_stream_4_a_run_with_a_seq_seen_before_is_checked_line_by_line() -> None:
    started = {"type": "started", "jobId": "j", "timestamp": 1, "seq": 1}
    log = {"type": "log", "jobId": "j", "timestamp": 2, "seq": 2, **EXTRA["log"]}
    checker = StreamChecker()
    assert checker.check(message_of(started), encode(started)) == []
    assert checker.check(message_of(log), encode(log)) == []
    again = ordinary_run([log])
    assert again is not None  # ordinary among itself
    assert not checker.apply_run(again, [encode(log)])  # but not after seq 2
    assert [p.requirement for p in checker.check(message_of(log), encode(log))] == ["STREAM-4"]


def one_line_at_a_time(data: bytes) -> list[tuple[int, str, str]]:
    """What ``extjob validate`` reports, found the plain way: every line
    decoded on its own and checked by ``StreamChecker.check``."""
    buffer, checker, found = LineBuffer(), StreamChecker(), []
    lines = buffer.feed(data) + (buffer.feed(b"\n") if buffer.pending else [])
    for number, line in enumerate(lines, 1):
        if isinstance(line, OversizedLine):
            found.append((number, "LIMIT-1", ""))
            continue
        if not line.strip():
            continue
        try:
            message = decode(line)
        except RemoteProtocolError as exc:
            found.append((number, exc.requirement, exc.detail))
            continue
        found += [(number, p.requirement, p.message) for p in checker.check(message, line)]
    found += [(0, p.requirement, p.message) for p in checker.finish()]
    return found


@st.composite
def replayed(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A stream, then a reconnect that replays its last messages (REPLAY-4)."""
    stream = draw(streams())
    back = draw(st.integers(0, len(stream)))
    return [*stream, body("hello", "j", 100, None), *stream[back:]]


@given(
    st.lists(
        streams()
        | replayed()
        | st.sampled_from([[b"garbage"], [b""], [b"{}"], [b'{"type":"x-a"}'], [b" \r"]]),
        min_size=1,
        max_size=12,
    ),
    st.integers(1, 5_000),
)
@settings(max_examples=80, deadline=None)
def test_stream_rules_extjob_validate_finds_what_one_line_at_a_time_finds(
    pieces: list[list[Any]], chunk: int
) -> None:
    lines = [
        part if isinstance(part, bytes) else encode(part).rstrip(b"\n")
        for piece in pieces
        for part in piece
    ]
    data = b"\n".join(lines) + b"\n"
    with Validator(jobs=1) as validator:
        report = validator.check("s", (data[i : i + chunk] for i in range(0, len(data), chunk)))
    got = [
        (
            f.line or 0,
            f.problem.requirement,
            "" if f.problem.requirement == "LIMIT-1" else f.problem.message,
        )
        for f in report.findings
    ]
    assert sorted(got) == sorted(one_line_at_a_time(data))

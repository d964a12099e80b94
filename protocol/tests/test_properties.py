"""Property tests: round trips, arbitrary text, arbitrary garbage.

The core's contract for hostile input: it returns a Message or raises
RemoteProtocolError, nothing else, whatever the bytes.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from extjob.protocol import (
    LineBuffer,
    OversizedLine,
    RemoteProtocolError,
    StreamChecker,
    decode,
    encode,
)

# Text JSON can carry: any code point but lone surrogates (FRAME-2).
text = st.text(st.characters(exclude_categories=["Cs"]))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@given(
    message=text,
    data=st.dictionaries(text, json_values, max_size=5),
    level=st.sampled_from(["debug", "info", "warn", "error"]),
)
def test_frame_2_log_messages_with_any_text_round_trip(
    message: str, data: dict[str, Any], level: str
) -> None:
    body = {
        "type": "log",
        "jobId": "j",
        "timestamp": 1,
        "level": level,
        "message": message,
        "data": data,
    }
    line = encode(body)
    assert line.count(b"\n") == 1
    assert decode(line[:-1]).body == body


@given(result=json_values)
def test_msg_7_any_result_round_trips(result: Any) -> None:
    body = {"type": "completed", "jobId": "j", "timestamp": 1, "result": result}
    assert decode(encode(body)[:-1]).body == body


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_frame_3_garbage_lines_raise_only_the_cores_error(line: bytes) -> None:
    try:
        message = decode(line)
    except RemoteProtocolError as exc:
        assert exc.code in {"invalid_json", "invalid_message", "unknown_type"}
    else:
        StreamChecker().check(message)


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(1, 30))
def test_limit_1_line_buffer_keeps_every_line_within_the_limit(
    chunks: list[bytes], limit: int
) -> None:
    buffer = LineBuffer(max_line_bytes=limit)
    got = [line for chunk in chunks for line in buffer.feed(chunk)]
    lines = [raw.removesuffix(b"\r") for raw in b"".join(chunks).split(b"\n")[:-1]]
    assert [None if isinstance(g, OversizedLine) else g for g in got] == [
        None if len(line) > limit else line for line in lines
    ]

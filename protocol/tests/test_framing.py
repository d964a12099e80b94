"""FRAME-* and LIMIT-1: splitting byte streams into lines, and encoding."""

from __future__ import annotations

import tracemalloc

import pytest

from extjob.protocol import LineBuffer, LocalProtocolError, OversizedLine, encode


def test_frame_1_lines_split_across_chunks_are_joined() -> None:
    buffer = LineBuffer()
    assert buffer.feed(b'{"a":') == []
    assert buffer.pending == 5
    assert buffer.feed(b'1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert buffer.feed(b":3}\r\n") == [b'{"c":3}']
    assert buffer.pending == 0


def test_empty_lines_are_returned_empty() -> None:
    assert LineBuffer().feed(b"\n\r\n") == [b"", b""]


def test_limit_1_a_line_at_the_limit_is_kept_and_one_over_is_skipped() -> None:
    buffer = LineBuffer(max_line_bytes=10)
    assert buffer.feed(b"0123456789\n") == [b"0123456789"]
    assert buffer.feed(b"0123456789\r\n") == [b"0123456789"]
    assert buffer.feed(b"01234567890\nok\n") == [OversizedLine(11), b"ok"]


def test_limit_1_an_oversized_line_in_many_chunks_is_skipped_and_the_next_line_survives() -> None:
    buffer = LineBuffer(max_line_bytes=100)
    for _ in range(50):
        assert buffer.feed(b"x" * 64) == []
    assert buffer.feed(b"x\nnext\n") == [OversizedLine(50 * 64 + 1), b"next"]


def test_frame_4_skipping_a_huge_line_takes_constant_memory() -> None:
    """FRAME-4: 100 MB without a newline must not be held in memory."""
    buffer = LineBuffer(max_line_bytes=1024 * 1024)
    chunk = b"y" * (1024 * 1024)
    tracemalloc.start()
    for _ in range(100):
        buffer.feed(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert buffer.feed(b"\n") == [OversizedLine(100 * len(chunk))]
    assert peak < 8 * len(chunk)


def test_frame_2_encode_is_one_compact_utf8_line() -> None:
    line = encode({"type": "log", "message": 'tab\t"q"\n🎉'})
    assert line == '{"type":"log","message":"tab\\t\\"q\\"\\n🎉"}\n'.encode()
    assert line.count(b"\n") == 1


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "\ud800", object()])
def test_frame_2_encode_refuses_what_json_cannot_carry(bad: object) -> None:
    with pytest.raises(LocalProtocolError):
        encode({"value": bad})

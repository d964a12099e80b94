"""The wire view's bounds: the first and the newest messages, cut to size."""

from __future__ import annotations

import json
import time

from extjob.protocol import decode
from extjob.server.wire import CLIP_BYTES, FIRST, LAST, SMALL_READ, WireLog


def _progress(seq: int, message: str = "step") -> bytes:
    body = {"type": "progress", "jobId": "j_1", "timestamp": 1, "seq": seq, "percent": 1}
    return json.dumps({**body, "message": message}).encode()


def _read(log: WireLog, lines: list[bytes]) -> None:
    log.received([decode(line) for line in lines], sum(map(len, lines)))


def test_it_keeps_the_first_and_the_newest_and_counts_the_rest() -> None:
    log = WireLog(time.monotonic())
    seq = 0
    for size in (3, 1, 50, 200, 1, 7, 90):  # reads of every size
        _read(log, [_progress(seq := seq + 1) for _ in range(size)])
    log.sent({"type": "ack", "jobId": "j_1", "seq": seq})
    view = log.snapshot()
    seqs = [m["message"]["seq"] for m in view["messages"]]
    assert seqs[:FIRST] == list(range(1, FIRST + 1))
    assert seqs[FIRST:] == [*range(seq - LAST + 2, seq + 1), seq]  # the ack is newest
    assert view["messages"][-1]["dir"] == "out"
    assert view["omitted"] == seq + 1 - FIRST - LAST
    json.dumps(view)  # storable as it is


def test_memory_stays_bounded_however_the_reads_come() -> None:
    log = WireLog(time.monotonic())
    for seq in range(1, 5000):
        _read(log, [_progress(seq)])
        kept = sum(len(items) for _, _, items in log._last)
        assert kept < 2 * LAST


def test_messages_of_a_large_read_are_cut() -> None:
    log = WireLog(time.monotonic())
    _read(log, [_progress(i + 1) for i in range(FIRST)])
    big = [_progress(FIRST + 1 + i, "x" * SMALL_READ) for i in range(3)]
    _read(log, big)
    newest = log.snapshot()["messages"][-1]["message"]
    assert isinstance(newest, str) and len(newest.encode()) < CLIP_BYTES + 64
    assert newest.startswith('{"type":"progress"') and newest.endswith(" bytes)")


def test_the_hello_token_is_never_kept() -> None:
    log = WireLog(time.monotonic())
    hello = {"type": "hello", "jobId": "j_1", "timestamp": 1, "token": "s3cret-" * 8, "pid": 9}
    log.hello(decode(json.dumps({**hello, "protocolVersion": 1, "features": ["auth"]})))
    assert "s3cret" not in json.dumps(log.snapshot())

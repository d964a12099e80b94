"""FRAME-2, WRAP-3: correct JSON for every string job code can produce."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyworker_testlib import Peer, Worker, ext_payload, load_vectors

from extjob_worker import _encode_json, _progress_body

WORKER_MESSAGES = [v for v in load_vectors("worker-messages.json") if v["valid"]]

HOSTILE = [
    'quotes " and \\ backslashes \\" \\\\',
    "".join(chr(c) for c in range(32)) + "\x7f",
    "tab\there, CR\r, LF\n, CRLF\r\n",
    "line separators \u2028 \u2029 and a BOM \ufeff",
    "emoji 🎉 family 👩\u200d👩\u200d👧 flag 🇳🇱 astral 𝄞",
    "lone high \ud800 here",
    "lone low \udc00 here",
    "reversed pair \udc00\ud800",
    "split pair \ud83c\udf89 joins",
    "",
    "NUL \x00 inside",
    '{"type":"completed","jobId":"forged"}\n',
]
# What a receiver must see: lone surrogates replaced by U+FFFD, a split pair joined (FRAME-2).
EXPECTED = {
    "lone high \ud800 here": "lone high \ufffd here",
    "lone low \udc00 here": "lone low \ufffd here",
    "reversed pair \udc00\ud800": "reversed pair \ufffd\ufffd",
    "split pair \ud83c\udf89 joins": "split pair 🎉 joins",
}


def strictly_parsed(raw: bytes) -> Any:
    """Parse like a strict receiver: valid UTF-8, no raw control characters, no lone surrogates."""
    text = raw.decode("utf-8")  # raises on invalid UTF-8
    assert not any(ord(c) < 0x20 for c in text), "FRAME-2: a raw control character"
    value = json.loads(text)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


@pytest.mark.parametrize("vector", WORKER_MESSAGES, ids=[v["description"] for v in WORKER_MESSAGES])
def test_frame_2_vectors_round_trip(vector: dict[str, Any]) -> None:
    """Every valid worker message of the shared vectors encodes to one line that parses back."""
    assert strictly_parsed(_encode_json(vector["data"]).encode("utf-8")) == vector["data"]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_wrap_3_hostile_strings_encode(text: str) -> None:
    assert strictly_parsed(_encode_json({text: text}).encode("utf-8")) == {
        EXPECTED.get(text, text): EXPECTED.get(text, text)
    }


def test_frame_2_nan_and_infinity_are_refused() -> None:
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="FRAME-2"):
            _encode_json({"x": value})


def test_wrap_3_hostile_strings_over_the_wire(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """WRAP-3 end to end: log, progress, data keys, a 5 MB string, and the failure path."""
    script = (
        "from extjob_worker import run_job\n"
        "def handler(job):\n"
        "    for s in job.data['strings']:\n"
        "        job.info(s, **{s or 'empty': s})\n"
        "        job.progress(1, s)\n"
        "    job.info('big', blob=('\\x01\"\\\\\\ud800🎉' * 500_000))\n"
        "    raise RuntimeError(job.data['strings'][1])\n"
        "run_job(handler)\n"
    )
    payload = ext_payload(ext_peer, {"strings": HOSTILE}, short_tmp)
    assert workers(payload, script=script).wait() == 1
    with ext_peer.cond:
        raws = [r.raw for r in ext_peer.received]
    messages = [strictly_parsed(raw) for raw in raws]
    logs = [m for m in messages if m["type"] == "log"]
    progress = [m for m in messages if m["type"] == "progress"]
    for text, log, update in zip(HOSTILE, logs, progress, strict=False):
        expected = EXPECTED.get(text, text)
        assert log["message"] == expected and update["message"] == expected
        assert log["data"] == {(expected or "empty"): expected}
    assert logs[-1]["data"]["blob"] == '\x01"\\\ufffd🎉' * 500_000
    failed = next(m for m in messages if m["type"] == "failed")
    assert failed["error"] == HOSTILE[1]


def test_wrap_2_result_that_is_not_json_fails_the_job(
    peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """WRAP-2: a result json cannot encode is the job code's error, reported as failed."""
    script = "from extjob_worker import run_job\nrun_job(lambda job: {'when': object()})\n"
    assert workers({**ext_payload(peer, {}, short_tmp), "features": []}, script=script).wait() == 1
    peer.wait_type("failed")
    assert "not JSON serializable" in peer.messages("failed")[0]["error"]


@pytest.mark.parametrize("message", [*HOSTILE, None])
@pytest.mark.parametrize("percent", [0, 100, 33, 12.5, 1 / 3, -0.0, 99.99999999999999, 1e-300])
def test_frame_2_progress_fast_path_writes_what_the_encoder_writes(
    percent: float, message: str | None
) -> None:
    fields: dict[str, Any] = {"percent": percent}
    if message is not None:
        fields["message"] = message
    assert _progress_body(percent, message) == _encode_json(fields)


def test_replay_1_the_wrapper_sequences_the_types_the_core_does() -> None:
    """The wrapper has no dependencies, so it keeps its own list: it must be the core's."""
    import extjob_worker
    from extjob.protocol import SEQUENCED_TYPES

    assert extjob_worker._SEQUENCED == SEQUENCED_TYPES

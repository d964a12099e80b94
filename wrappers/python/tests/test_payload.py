"""Section 2: reading the payload, the environment fallback, malformed payloads."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from pyworker_testlib import Peer, Worker, clean_environment, load_vectors

from extjob_worker import PayloadError, parse_payload, read_payload

PAYLOADS = load_vectors("payloads.json")


@pytest.mark.parametrize("vector", PAYLOADS, ids=[v["description"] for v in PAYLOADS])
def test_pay_2_pay_6_payload_vectors(vector: dict[str, Any]) -> None:
    """PAY-2..PAY-6 through the shared vectors, with no environment to fall back on."""
    raw = json.dumps(vector["data"])
    if vector["valid"]:
        payload = parse_payload(raw, {})
        assert payload.job_id == vector["data"]["jobId"]
        assert payload.data == vector["data"]["data"]
        assert payload.has_checkpoint == (vector["data"].get("checkpoint") is not None)
    elif vector["description"] == "missing data":
        # ENV-2: "Missing data is then {}" -- a worker does not refuse it (the schema does).
        assert parse_payload(raw, {}).data == {}
    else:
        with pytest.raises(PayloadError) as error:
            parse_payload(raw, {})
        assert "\n" not in str(error.value)


def test_env_2_fallback_prefers_extjob_then_donkeylabs() -> None:
    """ENV-2: empty stdin takes every field from the environment; a non-empty value wins."""
    env = {
        "EXTJOB_JOB_ID": "",
        "DONKEYLABS_JOB_ID": "j_env",
        "EXTJOB_JOB_NAME": "ours",
        "DONKEYLABS_JOB_NAME": "theirs",
        "DONKEYLABS_SOCKET_PATH": "",
        "DONKEYLABS_TCP_PORT": "4242",
    }
    payload = parse_payload(b"\n", env)
    assert (payload.job_id, payload.name, payload.socket_path) == (
        "j_env",
        "ours",
        "tcp://127.0.0.1:4242",
    )
    assert payload.data == {}
    assert payload.features == frozenset()


def test_ckpt_2_a_null_checkpoint_is_none() -> None:
    """CKPT-2, MSG-2: ``checkpoint: null`` means no checkpoint, as if it were absent."""
    raw = '{"jobId":"j","name":"n","data":{},"socketPath":"/s","checkpoint":null}'
    assert parse_payload(raw, {}).has_checkpoint is False


def test_env_2_payload_fields_win_over_environment() -> None:
    payload = parse_payload(
        '{"jobId":"j_p","name":"n","data":1,"socketPath":"/s"}', {"EXTJOB_JOB_ID": "j_env"}
    )
    assert payload.job_id == "j_p"


def test_env_2_partial_payload_takes_missing_fields_from_environment() -> None:
    payload = parse_payload(
        '{"data":{"a":1}}',
        {"EXTJOB_JOB_ID": "j", "EXTJOB_JOB_NAME": "n", "EXTJOB_SOCKET_PATH": "/s"},
    )
    assert (payload.job_id, payload.data, payload.socket_path) == ("j", {"a": 1}, "/s")


@pytest.mark.parametrize(
    ("stdin", "names"),
    [
        (b"", "jobId"),
        (b"not json\n", "not valid JSON"),
        (b"[1]\n", "not an object"),
        (b'{"jobId":"j_1","name":"n","data":{}}\n', "socketPath"),
        (b'{"jobId":"j_1","name":"n","data":{},"socketPath":"tcp://nowhere"}\n', "tcp://HOST:PORT"),
        (b'{"jobId":"j_1","name":"n","data":{},"socketPath":"/s","attempt":0}\n', "attempt"),
    ],
)
def test_pay_6_malformed_payload_exits_2_with_one_line(
    workers: Callable[..., Worker], peer: Peer, stdin: bytes, names: str
) -> None:
    """PAY-6: exit non-zero (2) with one stderr line naming the problem, and never connect."""
    worker = workers(stdin)
    assert worker.wait() == 2
    out, err = worker.output()
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1 and names in lines[0], lines
    assert peer.connections == []


def test_pay_4_limit_2_a_payload_over_the_limit_is_refused() -> None:
    """PAY-4, LIMIT-2: at most 16 MiB are read; a larger payload is malformed."""
    big = b'{"jobId":"j","name":"n","socketPath":"/s","data":"' + b"x" * (16 << 20) + b'"}\n'
    with pytest.raises(PayloadError, match="PAY-4"):
        read_payload(io.BytesIO(big), {})


def test_env_2_environment_only_worker_runs(workers: Callable[..., Worker], peer: Peer) -> None:
    """ENV-2 end to end: no stdin at all, the original's variables only."""
    worker = workers(
        b"",
        env=clean_environment(
            DONKEYLABS_JOB_ID="j_1",
            DONKEYLABS_JOB_NAME="fixture",
            DONKEYLABS_SOCKET_PATH=peer.address,
        ),
    )
    assert worker.wait() == 0
    peer.wait_type("completed")
    assert peer.messages("completed")[0]["result"] == {"ok": True}

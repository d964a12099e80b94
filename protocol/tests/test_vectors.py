"""The shared vectors against the core: the schemas decide, the core agrees."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from extjob.protocol import (
    RemoteProtocolError,
    StreamChecker,
    decode,
    decode_object,
    encode,
    problems,
    validate_payload,
)
from extjob.protocol.vectors import VECTOR_DIR, load, raw_line, vector_id


def test_every_vector_file_matches_the_vector_schema() -> None:
    schema = json.loads((VECTOR_DIR / "vectors.schema.json").read_text())
    for path in VECTOR_DIR.glob("*.json"):
        if path.name != "vectors.schema.json":
            jsonschema.Draft202012Validator(schema).validate(json.loads(path.read_text()))


@pytest.mark.parametrize("test", load("worker-messages.json"), ids=vector_id)
def test_worker_message(test: dict[str, Any]) -> None:
    found = problems(test["data"])
    assert (not found) == test["valid"], found
    if not test["valid"]:
        with pytest.raises(RemoteProtocolError) as raised:
            decode_object(test["data"])
        assert raised.value.code == test["error"]
        assert raised.value.requirement == found[0].requirement


@pytest.mark.parametrize("test", load("server-messages.json"), ids=vector_id)
def test_server_message(test: dict[str, Any]) -> None:
    assert (not problems(test["data"], "server")) == test["valid"]


@pytest.mark.parametrize("test", load("payloads.json"), ids=vector_id)
def test_payload(test: dict[str, Any]) -> None:
    assert (not validate_payload(test["data"])) == test["valid"]


@pytest.mark.parametrize("test", load("lines.json"), ids=vector_id)
def test_line(test: dict[str, Any]) -> None:
    line = raw_line(test)
    if line.endswith(b"\r"):  # FRAME-1: the LineBuffer strips it before decode
        line = line[:-1]
    if test["valid"]:
        decode(line)
    else:
        with pytest.raises(RemoteProtocolError) as raised:
            decode(line)
        assert raised.value.code == test["error"]


@pytest.mark.parametrize("test", load("streams.json"), ids=vector_id)
def test_stream(test: dict[str, Any]) -> None:
    checker = StreamChecker()
    found = [p for m in test["messages"] for p in checker.check(decode_object(m))]
    found += checker.finish()
    assert (not found) == test["valid"], found
    if not test["valid"]:
        graded = {(p.requirement, p.severity) for p in found}
        assert (test["requirement"], test.get("severity", "error")) in graded, found


@pytest.mark.parametrize(
    "test", [t for t in load("worker-messages.json") if t["valid"]], ids=vector_id
)
def test_valid_messages_survive_a_round_trip(test: dict[str, Any]) -> None:
    assert decode(encode(test["data"]).rstrip(b"\n")).body == test["data"]

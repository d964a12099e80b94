"""The payload builder and ENV-1, checked against payload.schema.json."""

from __future__ import annotations

import pytest

from extjob.protocol import (
    ENV_VARS,
    FEATURES,
    Extensions,
    build_payload,
    payload_environment,
    validate_payload,
)

EXTENSIONS = Extensions(token="k" * 32, spool_path="/tmp/s/j.1.spool", attempt=2, max_attempts=3)


@pytest.mark.parametrize("extensions", [EXTENSIONS, None], ids=["extended", "v1"])
@pytest.mark.parametrize("socket_path", ["/tmp/j.sock", "tcp://127.0.0.1:4100"])
def test_pay_2_pay_3_every_payload_built_is_schema_valid(
    extensions: Extensions | None, socket_path: str
) -> None:
    payload = build_payload(
        "j_1",
        "resize",
        {"src": "a.png"},
        socket_path,
        heartbeat_timeout_ms=30_000,
        reconnect_window_ms=60_000,
        extensions=extensions,
        checkpoint={"step": 2},
    )
    assert validate_payload(payload) == []
    assert payload["heartbeatIntervalMs"] == 10_000  # HB-1
    if extensions is None:
        assert "token" not in payload and "features" not in payload
    else:
        assert payload["features"] == list(FEATURES)
        assert payload["checkpoint"] == {"step": 2}  # CKPT-2
        assert (payload["attempt"], payload["maxAttempts"]) == (2, 3)  # CKPT-3


def test_ckpt_2_no_checkpoint_no_field() -> None:
    payload = build_payload(
        "j", "n", None, "/s", heartbeat_timeout_ms=900, reconnect_window_ms=0, extensions=EXTENSIONS
    )
    assert "checkpoint" not in payload and validate_payload(payload) == []


def test_env_1_every_variable_is_set_and_the_tcp_port_only_for_tcp() -> None:
    unix = payload_environment({"jobId": "j", "name": "n", "socketPath": "/s"})
    assert set(unix) == set(ENV_VARS)
    assert unix["EXTJOB_JOB_ID"] == unix["DONKEYLABS_JOB_ID"] == "j"
    assert unix["DONKEYLABS_TCP_PORT"] == ""
    tcp = payload_environment({"jobId": "j", "name": "n", "socketPath": "tcp://[::1]:4100"})
    assert tcp["DONKEYLABS_TCP_PORT"] == "4100"


def test_env_3_no_secret_reaches_the_environment() -> None:
    payload = build_payload(
        "j", "n", {"secret": 1}, "/s", heartbeat_timeout_ms=900, reconnect_window_ms=0,
        extensions=EXTENSIONS, checkpoint={"c": 1},
    )  # fmt: skip
    values = set(payload_environment(payload).values())
    assert EXTENSIONS.token not in values
    assert not any("secret" in v or "{" in v for v in values)

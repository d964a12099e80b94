"""The bash wrapper (wrappers/shell/extjob.sh) against a real socket peer.

Each test runs real bash processes (the fixture worker or a small job script)
and checks what arrives on the socket against SPEC.md; test names cite the
requirement they exercise.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from shellpeer import FIXTURE, REPO, TOKEN, Peer, payload

VECTORS = REPO / "schema" / "vectors"


def _validator() -> Draft202012Validator:
    resources = []
    for path in (REPO / "schema").rglob("*.schema.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    registry: Registry = Registry().with_resources(resources)
    root = json.loads((REPO / "schema" / "worker-message.schema.json").read_text())
    return Draft202012Validator(root, registry=registry)


WORKER_MESSAGE = _validator()


def check_stream(peer: Peer) -> list[dict[str, Any]]:
    """Every line is a schema-valid message of this job with timestamps that
    never decrease (FRAME-1, MSG-1, TIME-1); returns the messages."""
    msgs = []
    for line in peer.lines:
        assert line.msg is not None, f"not JSON: {line.raw[:200]!r}"
        errors = [e.message for e in WORKER_MESSAGE.iter_errors(line.msg)]
        assert not errors, (line.raw[:200], errors)
        assert line.msg["jobId"] == peer.job_id
        msgs.append(line.msg)
    # STREAM-5: sequenced messages in seq order, the others in stream order.
    by_seq = {m["seq"]: m["timestamp"] for m in msgs if "seq" in m}
    stamps = [by_seq[seq] for seq in sorted(by_seq)]
    assert stamps == sorted(stamps)
    stamps = [m["timestamp"] for m in msgs if "seq" not in m]
    assert stamps == sorted(stamps)
    return msgs


def types(msgs: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in msgs if m["type"] != "heartbeat"]


def fixture(scenario: str, **params: Any) -> dict[str, Any]:
    return {"scenario": scenario, **params}


# -- v1 core ---------------------------------------------------------------


def test_neg_3_v1_complete_sends_started_progress_completed(make_peer, run_worker, transport):
    peer = make_peer(transport, ext=False)
    worker = run_worker(FIXTURE, payload(peer, fixture("complete"), ext=False))
    assert worker.wait() == 0  # EXIT-2
    msgs = check_stream(peer)
    assert types(msgs) == ["started", "progress", "completed"]  # LIFE-1, NEG-3: no hello
    assert msgs[1]["percent"] == 50 and msgs[1]["message"] == "halfway"
    assert msgs[-1]["result"] == {"ok": True}
    assert all("seq" not in m for m in msgs)
    assert worker.stdout == b""  # FIX-3, WRAP-5


def test_exit_3_v1_exits_promptly_after_writing_the_terminal_message(make_peer, run_worker):
    peer = make_peer(ext=False)
    worker = run_worker(FIXTURE, payload(peer, fixture("complete"), ext=False))
    peer.wait_type("completed")
    written = time.monotonic()
    assert worker.wait() == 0
    assert time.monotonic() - written < 1.0


def test_exit_2_fail_sends_failed_and_exits_1(make_peer, run_worker, transport):
    peer = make_peer(transport)
    worker = run_worker(FIXTURE, payload(peer, fixture("fail", message="it\tbroke")))
    assert worker.wait() == 1  # EXIT-2
    msgs = check_stream(peer)
    assert types(msgs)[-1] == "failed"
    assert msgs[-1]["error"] == "it\tbroke"  # the original lost this one (tab)


def test_fix_2_crash_exits_with_its_code_and_sends_nothing_more(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("crash", code=7)))
    assert worker.wait() == 7
    assert types(check_stream(peer)) == ["hello", "started"]


def test_msg_6_levels_and_logs_with_data(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("levels")))
    assert worker.wait() == 0
    logs = [m for m in check_stream(peer) if m["type"] == "log"]
    assert [(m["level"], m["data"]) for m in logs] == [
        (level, {"level": level}) for level in ("debug", "info", "warn", "error")
    ]


def test_wrap_3_large_result_of_a_megabyte(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("large", bytes=1 << 20)))
    assert worker.wait(30) == 0
    assert check_stream(peer)[-1]["result"] == "x" * (1 << 20)


def test_limit_1_result_too_large_fails_instead(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("large", bytes=70000), maxLineBytes=65536))
    assert worker.wait() == 1
    last = check_stream(peer)[-1]
    assert last["type"] == "failed"
    assert last["error"].startswith("result too large: ")


def test_replay_1_thousand_progress_messages_arrive_in_order(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("progress", count=1000)))
    assert worker.wait(60) == 0
    progress = [m for m in check_stream(peer) if m["type"] == "progress"]
    assert [m["message"] for m in progress] == [f"step {i}" for i in range(1, 1001)]
    seqs = [m["seq"] for m in progress]
    assert seqs == sorted(set(seqs))  # REPLAY-1


# -- payload (section 2) ---------------------------------------------------

PAYLOAD_VECTORS = json.loads((VECTORS / "payloads.json").read_text())["tests"]


@pytest.mark.parametrize("vector", PAYLOAD_VECTORS, ids=[v["description"] for v in PAYLOAD_VECTORS])
def test_pay_2_pay_6_payload_vectors(vector, make_peer, run_worker, script):
    job = script('job_init\njob_complete "$JOB_DATA"')
    data = vector["data"]
    if isinstance(data, dict) and data.get("socketPath", "").startswith(("/", "tcp://")):
        # The vector's address, served by our peer (same transport).
        peer = make_peer("tcp" if data["socketPath"].startswith("tcp") else "unix")
        peer.job_id = data.get("jobId", peer.job_id)
        peer.token = data.get("token", peer.token)
        data = {**data, "socketPath": peer.address}
        data.pop("spoolPath", None)
    else:
        peer = make_peer()
    worker = run_worker(job, json.dumps(data).encode() + b"\n")
    status = worker.wait()
    if vector["valid"] or vector["description"] == "missing data":
        # ENV-2: a payload without data runs with data {}.
        assert status == 0, worker.stderr
        assert check_stream(peer)[-1]["result"] == data.get("data", {})
    else:
        assert status == 2  # PAY-6
        assert worker.stderr.count(b"\n") == 1, worker.stderr
        assert peer.lines == []


def test_pay_6_empty_stdin_without_environment_names_what_is_missing(run_worker, script):
    worker = run_worker(script("job_init"), b"")
    assert worker.wait() == 2
    assert b"jobId" in worker.stderr and worker.stderr.count(b"\n") == 1


def test_pay_6_invalid_json(run_worker, script):
    worker = run_worker(script("job_init"), b'{"jobId": \n')
    assert worker.wait() == 2
    assert b"not valid JSON" in worker.stderr


def test_env_2_empty_stdin_falls_back_to_donkeylabs_variables(make_peer, run_worker, script):
    peer = make_peer("tcp", ext=False)
    port = peer.address.rsplit(":", 1)[1]
    env = {"DONKEYLABS_JOB_ID": "j_1", "DONKEYLABS_JOB_NAME": "n", "DONKEYLABS_TCP_PORT": port}
    worker = run_worker(script('job_init\njob_complete "$JOB_DATA"'), b"", env=env)
    assert worker.wait() == 0, worker.stderr
    assert types(check_stream(peer)) == ["started", "completed"]
    assert peer.messages("completed")[0]["result"] == {}


def test_env_2_extjob_variables_win_over_donkeylabs(make_peer, run_worker, script):
    peer = make_peer(ext=False)
    env = {
        "EXTJOB_JOB_ID": "j_1",
        "DONKEYLABS_JOB_ID": "other",
        "EXTJOB_JOB_NAME": "n",
        "DONKEYLABS_SOCKET_PATH": peer.address,
    }
    worker = run_worker(script("job_init\njob_complete"), b"\n", env=env)
    assert worker.wait() == 0, worker.stderr
    assert peer.messages("completed")[0]["jobId"] == "j_1"


# -- strings (FRAME-2, WRAP-3) ---------------------------------------------

HOSTILE_VECTORS = [
    t["data"]
    for t in json.loads((VECTORS / "worker-messages.json").read_text())["tests"]
    if t["requirement"] == "FRAME-2" and t["valid"]
]


def test_wrap_3_hostile_strings_from_the_vectors_round_trip(make_peer, run_worker, script):
    # Bash strings cannot hold NUL, so the vectors' U+0000 cannot reach the
    # wrapper; every other character must come back unchanged.
    texts = [v.get("message", v.get("error", "")).replace("\0", "") for v in HOSTILE_VECTORS]
    texts += ["".join(chr(c) for c in range(1, 32)) + '\\"\\\\', "é" * 40000]
    peer = make_peer()
    job = script(  # the texts come in T0, T1, ... (no jq needed to read them)
        "job_init\n"
        "for ((i = 0; i < N; i++)); do\n"
        "  name=T$i\n"
        '  job_info "${!name}"\n'
        '  job_progress 1 "${!name}"\n'
        "done\n"
        'job_fail "${!name}" "${!name}"'
    )
    env = {f"T{i}": text for i, text in enumerate(texts)} | {"N": str(len(texts))}
    worker = run_worker(job, payload(peer), env=env)
    assert worker.wait(30) == 1
    msgs = check_stream(peer)
    assert [m["message"] for m in msgs if m["type"] == "log"] == texts
    assert [m["message"] for m in msgs if m["type"] == "progress"] == texts
    assert msgs[-1]["error"] == texts[-1] and msgs[-1]["stack"] == texts[-1]


def test_frame_2_invalid_utf8_and_lone_surrogates_are_replaced(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        "job_init\n"
        "job_info $'bad \\xff byte'\n"
        "job_info $'lone \\xed\\xa0\\x80 surrogate'\n"
        "job_info $'cut \\xe4\\xb8'\n"
        "job_info $'ok \\xf0\\x9f\\x8e\\x89 emoji'\n"
        "job_complete"
    )
    worker = run_worker(job, payload(peer))
    assert worker.wait() == 0
    logs = [m["message"] for m in check_stream(peer) if m["type"] == "log"]
    assert logs[0] == "bad \ufffd byte"
    assert logs[1].startswith("lone \ufffd") and logs[1].endswith(" surrogate")
    assert logs[2].startswith("cut \ufffd")
    assert logs[3] == "ok 🎉 emoji"


def test_wrap_3_multi_megabyte_message_with_control_characters(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        "job_init\n"
        "printf -v chunk 'a\\tb\\\\c\"d\\x01e\\n%.0s' {1..1000}\n"
        "big=''\n"
        "for i in {1..300}; do big+=$chunk; done\n"
        'job_info "$big"\n'
        "job_complete"
    )
    worker = run_worker(job, payload(peer))
    assert worker.wait(60) == 0
    (log,) = [m for m in check_stream(peer) if m["type"] == "log"]
    assert log["message"] == 'a\tb\\c"d\x01e\n' * 300_000


def test_bad_arguments_fail_the_call_not_the_job(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        "job_init\n"
        "job_progress 101 && exit 9\n"
        "job_progress abc && exit 9\n"
        "job_log loud x && exit 9\n"
        "job_info x '[1]' && exit 9\n"
        "job_complete '{oops' && exit 9\n"
        "job_progress 12.5 'ok' '{\"a\":\n1}'\n"
        "job_complete '[1, 2]'"
    )
    worker = run_worker(job, payload(peer))
    assert worker.wait() == 0, worker.stderr
    msgs = check_stream(peer)
    assert types(msgs) == ["hello", "started", "progress", "completed"]
    assert msgs[-2]["percent"] == 12.5 and msgs[-2]["data"] == {"a": 1}
    assert msgs[-1]["result"] == [1, 2]
    assert worker.stderr.count(b"\n") == 5


# -- heartbeats (HB-2) -----------------------------------------------------


def test_hb_2_heartbeats_while_the_job_code_sleeps(make_peer, run_worker):
    peer = make_peer(ext=False)
    worker = run_worker(
        FIXTURE,
        payload(peer, fixture("sleep", ms=1500), ext=False) | {"heartbeatIntervalMs": 100},
    )
    assert worker.wait() == 0
    msgs = check_stream(peer)
    beats = [line.at for line in peer.lines if line.msg and line.msg["type"] == "heartbeat"]
    assert len(beats) >= 5
    assert max(b - a for a, b in itertools.pairwise(beats)) < 1.0  # generous
    kinds = [m["type"] for m in msgs]
    assert kinds.index("heartbeat") > kinds.index("started")
    assert kinds[-1] == "completed"  # nothing after the terminal message


def test_hb_2_welcome_sets_the_interval(make_peer, run_worker):
    peer = make_peer()
    peer.heartbeat_ms = 100
    worker = run_worker(FIXTURE, payload(peer, fixture("sleep", ms=1000)))
    assert worker.wait() == 0
    assert len(peer.messages("heartbeat")) >= 4


# -- extensions (section 7) ------------------------------------------------


def test_auth_2_hello_first_then_sequenced_messages(make_peer, run_worker, transport):
    peer = make_peer(transport)
    worker = run_worker(FIXTURE, payload(peer, fixture("complete")))
    assert worker.wait() == 0
    msgs = check_stream(peer)
    hello = msgs[0]
    assert hello["type"] == "hello" and hello["token"] == TOKEN
    assert hello["features"] == ["auth", "replay", "control", "spool", "checkpoint"]
    assert hello["pid"] == worker.proc.pid
    assert [m["seq"] for m in msgs[1:] if m["type"] != "heartbeat"] == [1, 2, 3]


def test_neg_2_uses_only_offered_features(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("complete"), features=["auth", "teleport"]))
    assert worker.wait() == 0
    msgs = check_stream(peer)
    assert msgs[0]["features"] == ["auth"]
    assert all("seq" not in m for m in msgs)


def test_auth_2_waits_for_welcome_before_anything_else(make_peer, run_worker):
    peer = make_peer()
    peer.hello_reply = {"type": "x-hold"}  # no welcome: the worker must wait
    worker = run_worker(FIXTURE, payload(peer, fixture("complete")))
    peer.wait_type("hello")
    time.sleep(0.5)  # a window in which nothing else may arrive
    assert types(peer.messages()) == ["hello"]
    peer.hello_reply = None
    peer.drop()  # REPLAY-3 would also time out; dropping is quicker
    assert worker.wait() == 0
    assert types(peer.messages()) == ["hello", "hello", "started", "progress", "completed"]


def test_exit_3_exits_promptly_after_the_terminal_ack(make_peer, run_worker):
    peer = make_peer()
    peer.ack = False
    worker = run_worker(FIXTURE, payload(peer, fixture("complete")))
    peer.wait_type("completed")
    time.sleep(0.3)
    assert worker.proc.poll() is None  # still waiting for the ack (REPLAY-3)
    peer.send({"type": "ack", "seq": 3})
    acked = time.monotonic()
    assert worker.wait() == 0
    assert time.monotonic() - acked < 1.0


def test_replay_4_reconnect_replays_what_was_not_acknowledged(make_peer, run_worker):
    peer = make_peer()
    peer.ack = False  # withhold acks: everything stays unacknowledged
    worker = run_worker(FIXTURE, payload(peer, fixture("logs", count=6, intervalMs=150)))
    peer.wait_type("log", 3)
    peer.recorded_seq = 2  # the server recorded started and the first log
    peer.ack = True
    peer.drop()
    assert worker.wait() == 0
    msgs = check_stream(peer)
    second = [line.msg for line in peer.lines if line.conn == 2]
    assert second[0]["type"] == "hello"
    replayed = [m for m in second if m["type"] != "heartbeat"][1:]
    assert replayed[0]["seq"] == 3  # nothing lastSeq covers, then in order
    first = {
        m["seq"]: m
        for m in msgs
        if "seq" in m and m in [ln.msg for ln in peer.lines if ln.conn == 1]
    }
    for m in replayed:
        if m["seq"] in first:
            assert m == first[m["seq"]]  # REPLAY-4: original seq, timestamp, content
    logs = {m["seq"]: m["data"]["i"] for m in msgs if m["type"] == "log"}
    assert sorted(logs.values()) == [1, 2, 3, 4, 5, 6]  # exactly once by seq


def test_replay_3_unacknowledged_terminal_message_means_reconnect(make_peer, run_worker):
    peer = make_peer()
    peer.ack = False
    peer.heartbeat_ms = 100  # the ack wait is max(2000, heartbeat interval)
    worker = run_worker(FIXTURE, payload(peer, fixture("complete")))
    peer.wait_type("completed")
    peer.ack = True
    # max(2000, heartbeatIntervalMs) later the worker gives up on this
    # connection, says hello again and replays; the peer then acks.
    assert worker.wait(15) == 0
    assert len(peer.messages("hello")) == 2
    assert len(peer.messages("completed")) == 2


def test_reconnect_1_server_away_and_back_v1_sends_started_again(make_peer, run_worker, transport):
    peer = make_peer(transport, ext=False)
    worker = run_worker(
        FIXTURE, payload(peer, fixture("logs", count=20, intervalMs=100), ext=False)
    )
    peer.wait_type("log", 2)
    peer.stop()
    time.sleep(0.6)  # the outage: the job code keeps running meanwhile
    peer.start()
    assert worker.wait(20) == 0
    msgs = check_stream(peer)
    assert types(msgs).count("started") == 2  # LIFE-3
    # v1 has no acks: a line written just as the server went away can be
    # lost (in its kernel buffer); what was queued during the outage is not.
    logs = [m["data"]["i"] for m in msgs if m["type"] == "log"]
    assert logs == sorted(logs) and len(logs) >= 18 and logs[-1] == 20
    assert types(msgs)[-1] == "completed"


def test_replay_6_progress_is_coalesced_while_disconnected(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        "job_init\n"
        "job_progress 1 first\n"
        'until [[ -e "$STOPPED" ]]; do sleep 0.05; done\n'
        'for i in {2..60}; do job_progress $i "p $i"; done\n'
        'until [[ -e "$RESTARTED" ]]; do sleep 0.05; done\n'
        "job_complete"
    )
    flags = Path(str(job) + ".d")
    flags.mkdir()
    env = {"STOPPED": str(flags / "stopped"), "RESTARTED": str(flags / "restarted")}
    worker = run_worker(job, payload(peer), env=env)
    peer.wait_type("progress")
    peer.stop()
    time.sleep(0.5)  # the worker notices (EOF, then refused reconnects)
    (flags / "stopped").touch()
    time.sleep(0.5)
    peer.start()
    (flags / "restarted").touch()
    assert worker.wait() == 0
    progress = [m["percent"] for m in check_stream(peer) if m["type"] == "progress"]
    assert progress[0] == 1 and progress[-1] == 60
    assert len(progress) < 30  # coalesced, not 60


def test_spool_2_result_goes_to_the_spool_file_when_the_server_never_returns(
    make_peer, run_worker, tmp_path
):
    peer = make_peer()
    spool = tmp_path / "spool" / "j_1.1.ndjson"
    spool.parent.mkdir(mode=0o700)
    worker = run_worker(
        FIXTURE,
        payload(
            peer,
            fixture("logs", count=4, intervalMs=200),
            spoolPath=str(spool),
            reconnectWindowMs=2000,  # also RECONNECT-6: the first connection
        ),
    )
    peer.wait_type("log")
    peer.stop()  # and never comes back
    assert worker.wait() == 0  # EXIT-2: completed, though only spooled
    lines = [json.loads(raw) for raw in spool.read_bytes().splitlines()]
    assert lines[0]["type"] == "hello" and lines[0]["token"] == TOKEN
    assert lines[-1]["type"] == "completed" and lines[-1]["result"] == {"count": 4}
    seqs = [m["seq"] for m in lines[1:]]
    assert seqs == sorted(seqs) and seqs[0] > 1  # what was acked is not in it
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert not Path(str(spool) + ".tmp").exists()
    for m in lines:
        assert not list(WORKER_MESSAGE.iter_errors(m))


def test_reconnect_3_retries_while_the_job_runs_however_long(make_peer, run_worker, tmp_path):
    peer = make_peer()
    spool = tmp_path / "s.ndjson"
    worker = run_worker(
        FIXTURE,
        payload(peer, fixture("sleep", ms=6000), spoolPath=str(spool), reconnectWindowMs=2000),
    )
    # The window is also the first connection's (RECONNECT-6): 200 ms was too
    # short for a bash job to be up on a loaded machine (it exited 1 unrun).
    peer.wait_type("started", timeout=60)  # the job's own clock runs from here
    peer.stop()
    time.sleep(2.5)  # longer than the window, but the job code still runs
    peer.start()
    # The retry 3.1 s after the loss (RECONNECT-1) comes well before the job
    # code ends (6 s): the window never runs out while the job runs.
    assert worker.wait() == 0
    assert not spool.exists()
    assert peer.messages("completed")[0]["result"] == {"slept": 6000}


def test_cancel_3_cancel_reaches_the_callback_and_the_job_fails(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("cancel")))
    peer.wait_type("started")
    time.sleep(0.2)
    sent = time.monotonic()
    peer.send({"type": "cancel", "reason": "requested", "deadlineMs": 10000})
    assert worker.wait() == 1
    assert time.monotonic() - sent < 3.0
    assert check_stream(peer)[-1]["error"] == "cancelled"
    assert worker.group_gone()


def test_cancel_3_poll_and_reason(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        "job_init\n"
        "until job_cancel_requested; do sleep 0.05; done\n"
        'job_fail "stopped: $(job_cancel_reason)"'
    )
    worker = run_worker(job, payload(peer))
    peer.wait_type("started")
    peer.send({"type": "cancel", "reason": "timeout", "deadlineMs": 0})
    assert worker.wait() == 1
    assert peer.messages("failed")[0]["error"] == "stopped: timeout"


def test_cancel_3_sigterm_counts_as_cancel_with_a_handler(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        'on_cancel() { job_fail "stopped: $(job_cancel_reason)"; }\n'
        "job_init\n"
        "job_on_cancel on_cancel\n"
        "job_info ready\n"
        "sleep 30 &\n"
        "wait $!"
    )
    worker = run_worker(job, payload(peer))
    peer.wait_type("log")  # the handler is registered
    os.killpg(worker.proc.pid, signal.SIGTERM)  # KILL-1's first step, to the group
    assert worker.wait() == 1
    assert peer.messages("failed")[0]["error"] == "stopped: signal"


def test_cancel_3_handler_and_main_flow_both_fail_while_a_child_is_killed(
    make_peer, run_worker, script
):
    """The handler kills a background child that bash has forked but not yet
    exec'd (it is still expanding its argument): bash runs the job shell's
    EXIT trap in that child. It must not end the job, or the agent drops the
    `failed` both the handler and the main flow send (LIFE-4)."""
    peer = make_peer()
    job = script(
        'on_cancel() { kill "$sleeper"; wait "$sleeper"; job_fail "cancelled"; }\n'
        "job_init\n"
        "job_on_cancel on_cancel\n"
        'sleep "$(exec 2>/dev/null; sleep 5; echo 30)" &\n'
        "sleeper=$!\n"
        "job_info ready\n"
        'wait "$sleeper"\n'
        'job_cancel_requested && job_fail "cancelled"'
    )
    worker = run_worker(job, payload(peer))
    peer.wait_type("log")  # the child is in its 5 s expansion
    peer.send({"type": "cancel", "reason": "requested", "deadlineMs": 10000})
    assert worker.wait() == 1
    assert [m["error"] for m in peer.messages("failed")] == ["cancelled"]
    assert types(check_stream(peer))[-1] == "failed"


def test_exit_2_fail_from_a_cancel_handler_while_complete_waits_for_its_ack(
    make_peer, run_worker, script, tmp_path
):
    """A terminal call from a trap while another one waits for its ack sends
    nothing more, waits for the first, and exits as the message delivered."""
    peer = make_peer()
    peer.ack = False
    entered = tmp_path / "handler-entered"
    job = script(
        'on_cancel() { : >"$ENTERED"; job_fail "cancelled"; }\n'
        "job_init\n"
        "job_on_cancel on_cancel\n"
        """job_complete '{"done": true}'"""
    )
    worker = run_worker(job, payload(peer), env={"ENTERED": str(entered)})
    peer.wait_type("completed")  # job_complete now waits for the ack
    peer.send({"type": "cancel", "reason": "requested", "deadlineMs": 10000})
    peer.wait_for(entered.exists)
    peer.ack = True
    peer.send({"type": "ack", "seq": peer.messages("completed")[0]["seq"]})
    assert worker.wait() == 0
    assert types(check_stream(peer)) == ["hello", "started", "completed"]


def test_ctrl_6_unknown_and_broken_server_lines_are_ignored(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("logs", count=5, intervalMs=150)))
    peer.wait_type("log")
    peer.send({"type": "x-debug", "anything": [1]})
    peer.send({"type": "pause"})
    peer.send(b"not json at all\n\n[1,2]\n")
    peer.send({"type": "error", "code": "invalid_message", "message": "m" * (1 << 20)})
    assert worker.wait() == 0
    assert types(check_stream(peer))[-1] == "completed"
    assert len(peer.messages("hello")) == 1  # still the first connection


def test_auth_4_refused_worker_stops_reconnecting_and_tells_the_job_code(
    make_peer, run_worker, script
):
    peer = make_peer()
    job = script(
        'job_init\nuntil job_cancel_requested; do sleep 0.05; done\njob_fail "$(job_cancel_reason)"'
    )
    # 2 s: the window is also the first connection's (RECONNECT-6)
    worker = run_worker(job, payload(peer, reconnectWindowMs=2000))
    peer.wait_type("started")
    peer.hello_reply = {"type": "error", "code": "auth", "message": "bad token"}
    peer.drop()  # the next hello is refused: fenced off
    assert worker.wait() == 1
    assert b"AUTH-4" in worker.stderr
    assert types(peer.messages()) == ["hello", "started", "hello"]  # no retry after it


def test_reconnect_6_every_hello_refused_exits_1_without_running_the_job_code(
    make_peer, run_worker, script
):
    peer = make_peer()
    peer.hello_reply = {"type": "error", "code": "auth", "message": "bad token"}
    worker = run_worker(script("job_init\nexit 7"), payload(peer, reconnectWindowMs=500))
    assert worker.wait() == 1
    assert worker.stderr.count(b"\n") == 1 and b"AUTH-4" in worker.stderr
    assert types(peer.messages()) == ["hello"]


@pytest.mark.parametrize("ext", [False, True], ids=["v1", "extended"])
def test_reconnect_6_no_server_exits_1_after_the_window_without_running_the_job_code(
    make_peer, run_worker, script, ext
):
    peer = make_peer(ext=ext)
    peer.stop()  # nobody listens
    start = time.monotonic()
    worker = run_worker(script("job_init\nexit 7"), payload(peer, ext=ext, reconnectWindowMs=500))
    assert worker.wait() == 1
    assert time.monotonic() - start >= 0.5
    assert worker.stderr.count(b"\n") == 1 and b"RECONNECT-6" in worker.stderr


def test_ckpt_2_checkpoint_saved_then_resumed(make_peer, run_worker):
    peer = make_peer()
    worker = run_worker(FIXTURE, payload(peer, fixture("checkpoint", value={"page": 7})))
    assert worker.wait() == 1
    msgs = check_stream(peer)
    assert types(msgs)[-2:] == ["checkpoint", "failed"]
    assert msgs[-2]["data"] == {"page": 7}
    peer2 = make_peer("tcp")
    worker = run_worker(
        FIXTURE,
        payload(peer2, fixture("checkpoint"), attempt=2, checkpoint={"page": 7}),
    )
    assert worker.wait() == 0
    assert peer2.messages("completed")[0]["result"] == {"resumedFrom": {"page": 7}}


# -- handler and exit behaviour (WRAP-2, EXIT-1) ---------------------------


def test_wrap_2_failing_handler_fails_with_its_command_and_a_stack(make_peer, run_worker, script):
    peer = make_peer()
    job = script("inner() { false; }\nhandler() { inner; }\njob_init\njob_run handler")
    worker = run_worker(job, payload(peer))
    assert worker.wait() == 1
    failed = peer.messages("failed")[0]
    assert failed["error"].startswith("handler failed with status 1")
    assert "at inner" in failed["stack"] and "at handler" in failed["stack"]


def test_wrap_2_set_e_failure_inside_the_handler_fails_the_job(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        "set -euo pipefail\n"
        "handler() { echo working >&2; ls /nonexistent-dir 2>/dev/null; job_complete; }\n"
        "job_init\n"
        "job_run handler"
    )
    worker = run_worker(job, payload(peer))
    assert worker.wait() == 1
    failed = peer.messages("failed")[0]
    assert "ls /nonexistent-dir" in failed["error"]
    assert not peer.messages("completed")


def test_wrap_2_handler_result_completes(make_peer, run_worker, script):
    peer = make_peer()
    job = script("handler() { JOB_RESULT='{\"n\": 1}'; }\njob_init\njob_run handler")
    worker = run_worker(job, payload(peer))
    assert worker.wait() == 0
    assert peer.messages("completed")[0]["result"] == {"n": 1}


def test_exit_1_script_that_ends_without_a_terminal_message(make_peer, run_worker, script):
    peer = make_peer()
    worker = run_worker(script("job_init\njob_info bye\nexit 4"), payload(peer))
    assert worker.wait() == 4  # the server decides by the status (EXIT-1)
    assert types(check_stream(peer)) == ["hello", "started", "log"]


def test_plain_wait_in_the_job_script_does_not_wait_for_the_wrapper(make_peer, run_worker, script):
    peer = make_peer()
    worker = run_worker(script("job_init\nsleep 0.1 &\nwait\njob_complete"), payload(peer))
    assert worker.wait() == 0


def test_wrap_4_killed_mid_send_leaves_whole_lines_and_no_process(make_peer, run_worker, script):
    peer = make_peer(ext=False)
    job = script(
        "job_init\n"
        "printf -v big '%*s' 1000000 ''\n"
        'for i in {1..50}; do job_info "$i ${big}"; done\n'
        "job_complete"
    )
    worker = run_worker(job, payload(peer, ext=False))
    peer.wait_type("log")
    os.kill(worker.proc.pid, signal.SIGKILL)  # the job shell only, mid-send
    worker.proc.wait()  # not communicate(): the agent still holds stderr
    assert worker.group_gone(10)  # the agent noticed and finished
    for line in peer.lines:  # RECONNECT-2/FRAME-1: every line arrived whole
        assert line.msg is not None
    assert not peer.messages("completed")


@pytest.mark.parametrize("how", ["closed", "broken"])
def test_wrap_5_works_with_stdout_and_stderr_closed_or_broken(make_peer, run_worker, script, how):
    peer = make_peer()
    # broken: both are pipes whose reader is gone (EPIPE, SIGPIPE).
    redirect = "exec >&- 2>&-" if how == "closed" else "exec > >(:) 2> >(:); sleep 0.2"
    job = script(
        f"{redirect}\n"
        "job_init\n"
        "job_progress 200\n"  # an error message to a closed stderr
        "job_info done\n"
        "job_complete"
    )
    worker = run_worker(job, payload(peer))
    assert worker.wait() == 0
    assert types(check_stream(peer)) == ["hello", "started", "log", "completed"]


def test_wrap_3_json_string_option_carries_what_bash_cannot_hold(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        "job_init\n"
        "text=$(job_data_get -j .)\n"
        'job_info -j "$text"\n'
        'job_progress -j 5 "$text"\n'
        'job_info -j "not json" && exit 9\n'
        'job_fail -j "$text" "$text"'
    )
    text = 'nul\0 tab\t quote" emoji 🎉'
    worker = run_worker(job, payload(peer, text))
    assert worker.wait() == 1
    msgs = check_stream(peer)
    assert msgs[-3]["message"] == msgs[-2]["message"] == text
    assert msgs[-1]["error"] == msgs[-1]["stack"] == text


def test_replay_6_full_buffer_drops_the_oldest_logs_and_says_so(
    make_peer, run_worker, script, tmp_path
):
    peer = make_peer()
    job = script(
        "job_init\n"
        'until [[ -e "$AWAY" ]]; do sleep 0.05; done\n'
        'for ((i = 1; i <= 10100; i++)); do job_info "l $i"; done\n'
        "job_checkpoint '{\"kept\": true}'\n"
        'touch "$QUEUED"\n'
        'until [[ -e "$BACK" ]]; do sleep 0.05; done\n'
        "job_complete"
    )
    flags = {name: tmp_path / name.lower() for name in ("AWAY", "QUEUED", "BACK")}
    env = {name: str(path) for name, path in flags.items()}
    worker = run_worker(job, payload(peer), env=env)
    peer.wait_type("started")
    peer.stop()  # away before the job code logs: nothing of that is acknowledged
    flags["AWAY"].touch()
    deadline = time.monotonic() + 120
    while not flags["QUEUED"].exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    peer.start()
    flags["BACK"].touch()
    assert worker.wait(120) == 0
    msgs = check_stream(peer)
    logs = [m for m in msgs if m["type"] == "log"]
    warns = [m for m in logs if m["level"] == "warn"]
    assert len(warns) == 1 and "dropped" in warns[0]["message"]
    assert 9000 <= len(logs) <= 10001  # bounded; the oldest went
    assert logs[-1]["message"] == "l 10100"  # the newest survive
    assert types(msgs)[:2] == ["hello", "started"]  # never dropped
    assert any(m["type"] == "checkpoint" for m in msgs)  # never dropped


@pytest.mark.parametrize("ext", [False, True], ids=["v1", "extended"])
def test_reconnect_2_a_server_that_stops_reading_is_waited_for(make_peer, run_worker, ext):
    peer = make_peer(ext=ext)
    worker = run_worker(FIXTURE, payload(peer, fixture("logs", count=2000), ext=ext))
    peer.wait_type("started")
    peer.reading.clear()
    time.sleep(1.0)  # the stall: the wrapper must neither die nor deadlock
    peer.reading.set()
    assert worker.wait(60) == 0
    logs = {m["data"]["i"] for m in check_stream(peer) if m["type"] == "log"}
    assert logs == set(range(1, 2001))


def test_readme_example_works(make_peer, run_worker, tmp_path):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Shell wrapper", 1)[1]
    example = section.split("```bash\n", 1)[1].split("```", 1)[0]
    job = tmp_path / "example.sh"
    job.write_text(example.replace("sleep 1 &", "sleep 0.01 &"))
    peer = make_peer()
    worker = run_worker(job, payload(peer, {"steps": 3}), cwd=REPO)
    assert worker.wait() == 0, worker.stderr
    msgs = check_stream(peer)
    assert [m["percent"] for m in msgs if m["type"] == "progress"] == [33, 66, 100]
    assert msgs[-1]["result"] == {"steps": 3}


def test_an_exit_trap_set_before_job_init_still_runs(make_peer, run_worker, script):
    peer = make_peer()
    job = script("trap 'echo \"it'\"'\"'s mine\" >&2' EXIT\nset -u\njob_init\njob_complete")
    # The script sources the wrapper first; set the trap before job_init.
    worker = run_worker(job, payload(peer))
    assert worker.wait() == 0
    assert worker.stderr == b"it's mine\n"
    assert types(check_stream(peer))[-1] == "completed"


def test_reconnect_3_a_server_that_never_acknowledges_gets_the_spool(
    make_peer, run_worker, tmp_path
):
    peer = make_peer()
    peer.ack = False  # welcomes every connection, acknowledges nothing
    peer.heartbeat_ms = 100  # REPLAY-3 waits max(2000, heartbeat interval)
    spool = tmp_path / "never-acked.ndjson"
    worker = run_worker(
        FIXTURE, payload(peer, fixture("complete"), spoolPath=str(spool), reconnectWindowMs=2000)
    )
    # Each connection fails REPLAY-3's wait (2 s); none counts as "up", so
    # the window runs out and the result is spooled. The window is also
    # RECONNECT-6's for the first connection: 300 ms was too short for a bash
    # job to start and be welcomed on a loaded machine (it exited 1 unrun).
    assert worker.wait(30) == 0
    assert json.loads(spool.read_bytes().splitlines()[-1])["type"] == "completed"


def test_wrap_4_background_subshells_never_interleave_lines(make_peer, run_worker, script):
    peer = make_peer()
    job = script(
        "job_init\n"
        "printf -v pad '%*s' 3500 ''\n"
        "for w in 1 2 3 4; do\n"
        "  ( for ((i = 1; i <= 100; i++)); do\n"
        '      job_info "$w.$i ${pad:0:i * 40}"\n'
        "    done ) &\n"
        "done\n"
        "wait\n"
        "job_complete"
    )
    worker = run_worker(job, payload(peer))
    assert worker.wait(60) == 0
    logs = [m["message"].split(" ", 1)[0] for m in check_stream(peer) if m["type"] == "log"]
    assert sorted(logs) == sorted(f"{w}.{i}" for w in range(1, 5) for i in range(1, 101))


def test_trans_1_bracketed_ipv6_address(run_worker):
    try:
        peer = Peer("tcp://[::1]:0", ext=False)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        worker = run_worker(FIXTURE, payload(peer, fixture("complete"), ext=False))
        assert worker.wait() == 0
        assert types(check_stream(peer)) == ["started", "progress", "completed"]
    finally:
        peer.stop()


def test_replay_6_full_buffer_while_connected_holds_the_job_code_back(
    make_peer, run_worker, script, tmp_path
):
    peer = make_peer()
    peer.ack = False  # connected, but nothing is acknowledged for now
    queued = tmp_path / "queued"
    job = script(
        "job_init\n"
        'for ((i = 1; i <= 10100; i++)); do job_info "l $i"; done\n'
        'touch "$QUEUED"\n'
        "job_complete"
    )
    worker = run_worker(job, payload(peer), env={"QUEUED": str(queued)})
    peer.wait_type("log", 9999, timeout=60)  # the buffer holds 10,000 (with started)
    time.sleep(0.5)
    assert not queued.exists()  # held back, not dropping logs
    peer.ack = True
    peer.send({"type": "ack", "seq": max(m["seq"] for m in peer.messages("log"))})
    assert worker.wait(120) == 0
    logs = {m["seq"]: m["message"] for m in check_stream(peer) if m["type"] == "log"}
    assert sorted(logs.values(), key=lambda t: int(t[2:])) == [f"l {i}" for i in range(1, 10101)]


@pytest.mark.parametrize("scenario", ["complete", "fail", "crash"])
def test_no_files_left_behind(make_peer, run_worker, tmp_path, scenario):
    peer = make_peer()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    worker = run_worker(FIXTURE, payload(peer, fixture(scenario)), env={"TMPDIR": str(tmp)})
    worker.wait()
    assert list(tmp.iterdir()) == []  # the agent removed its directory


def test_replay_6_nothing_is_dropped_while_the_first_welcome_is_awaited(
    make_peer, run_worker, script, tmp_path
):
    # The quarantined race: the agent took 10,000 messages while its first
    # connection still waited for the welcome and dropped logs as if the
    # server were away, so the job shell ran on. Now the job code runs only
    # once the first connection is up (RECONNECT-6), and no log goes before
    # a connection has failed.
    peer = make_peer()
    peer.ext = False  # no welcome until the test sends one
    ran = tmp_path / "ran"
    job = script(
        'job_init\ntouch "$RAN"\nfor ((i = 1; i <= 10100; i++)); do job_info "l $i"; done\n'
        "job_complete"
    )
    slow = {"heartbeatIntervalMs": 30000, "heartbeatTimeoutMs": 90000}  # AUTH-2 waits 30 s
    worker = run_worker(job, payload(peer, **slow), env={"RAN": str(ran)})
    peer.wait_type("hello")
    time.sleep(0.5)
    assert not ran.exists()  # held in job_init until the welcome
    hello = peer.messages("hello")[-1]
    peer.ext = True
    peer.send({"type": "welcome", "protocolVersion": 1, "features": hello["features"], "lastSeq": 0,
               "heartbeatIntervalMs": 10000})  # fmt: skip
    assert worker.wait(120) == 0
    logs = [m["message"] for m in check_stream(peer) if m["type"] == "log"]
    assert logs == [f"l {i}" for i in range(1, 10101)]  # none dropped, no warn

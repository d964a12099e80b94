"""An extended worker: hello/welcome, seq/ack/replay, cancel, spool, checkpoint, limits."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyworker_testlib import ALL_FEATURES, TOKEN, Peer, Worker, check_stream, ext_payload

TERMINAL = ("completed", "failed")


def on_connection(peer: Peer, index: int) -> list[dict[str, Any]]:
    with peer.cond:
        return [r.message for r in peer.received if r.conn == index]


def test_neg_2_spool_offered_without_replay_is_not_used(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """NEG-2: spool requires replay; offered alone, hello must not name it."""
    offered = ["auth", "control", "spool", "checkpoint"]
    payload = ext_payload(ext_peer, {"scenario": "complete"}, short_tmp, features=offered)
    assert workers(payload).wait() == 0
    with ext_peer.cond:
        hello = ext_peer.received[0].message
    assert hello["features"] == ["auth", "control", "checkpoint"]


def test_auth_2_hello_then_nothing_before_welcome(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """AUTH-2, NEG-2: hello first with the token and the features in use, then wait."""
    ext_peer.welcome_delay = 0.3
    worker = workers(ext_payload(ext_peer, {"scenario": "complete"}, short_tmp))
    assert worker.wait() == 0
    with ext_peer.cond:
        received = list(ext_peer.received)
    hello = received[0].message
    assert hello["type"] == "hello" and hello["token"] == TOKEN
    assert hello["features"] == ALL_FEATURES and hello["protocolVersion"] == 1
    assert hello["pid"] == worker.proc.pid
    assert all(r.at >= ext_peer.welcomed_at[0] for r in received[1:])
    messages = [r.message for r in received]
    assert [m["type"] for m in messages] == ["hello", "started", "progress", "completed"]
    assert [m["seq"] for m in messages[1:]] == [1, 2, 3], "REPLAY-1"
    check_stream(messages)


def test_neg_1_neg_2_features_not_offered_are_not_used(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """NEG-1, NEG-2: unknown features are ignored; without replay nothing carries seq."""
    payload = ext_payload(ext_peer, {"scenario": "complete"}, short_tmp, features=["auth", "zz"])
    assert workers(payload).wait() == 0
    messages = ext_peer.messages()
    assert messages[0]["features"] == ["auth"]
    assert all("seq" not in m for m in messages)
    assert [m["type"] for m in messages] == ["hello", "started", "progress", "completed"]


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_replay_4_after_the_server_comes_back(
    short_tmp: Path, workers: Callable[..., Worker], tcp: bool
) -> None:
    """REPLAY-4, REPLAY-5, RECONNECT-1: the job runs on through the outage; afterwards the
    server has every log exactly once, and replays are identical to the originals."""
    peer = Peer(short_tmp, tcp=tcp, extended=True)
    try:
        payload = ext_payload(peer, {"scenario": "logs", "count": 40, "intervalMs": 20}, short_tmp)
        worker = workers(payload)
        peer.wait_for(lambda: peer.types().count("log") >= 5, "5 logs")
        peer.ack_if = lambda message: False  # received, never recorded: must be replayed
        peer.wait_for(lambda: peer.types().count("log") >= 10, "10 logs")
        peer.stop()
        time.sleep(0.3)  # the outage itself
        peer.ack_if = lambda message: True
        peer.start()
        assert worker.wait() == 0
        logs = [m["data"]["i"] for m in peer.recorded if m["type"] == "log"]
        assert logs == list(range(1, 41))
        first_copies = {m["seq"]: m for m in on_connection(peer, 0) if "seq" in m}
        second = on_connection(peer, 1)
        assert second[0]["type"] == "hello"
        replayed = [m for m in second if m.get("seq") in first_copies]
        assert replayed and all(m == first_copies[m["seq"]] for m in replayed)
        seqs = [m["seq"] for m in second if "seq" in m]
        assert seqs == sorted(set(seqs))
        check_stream(peer.messages())
    finally:
        peer.close()


def test_replay_4_welcome_last_seq_is_not_resent(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """REPLAY-4: what the welcome's lastSeq covers is discarded, not replayed."""
    payload = ext_payload(ext_peer, {"scenario": "logs", "count": 30, "intervalMs": 20}, short_tmp)
    worker = workers(payload)
    ext_peer.wait_for(lambda: ext_peer.types().count("log") >= 5, "5 logs")
    ext_peer.send_acks = False  # recorded, but the acks are lost
    ext_peer.wait_for(lambda: ext_peer.types().count("log") >= 10, "10 logs")
    ext_peer.drop()
    ext_peer.send_acks = True
    assert worker.wait() == 0
    ext_peer.wait_for(lambda: len(ext_peer.welcomed_at) >= 2, "a second welcome")
    last_seq_at_drop = max(m["seq"] for m in on_connection(ext_peer, 0) if "seq" in m)
    resent = [m["seq"] for m in on_connection(ext_peer, 1) if "seq" in m]
    assert resent and min(resent) > last_seq_at_drop
    assert [m["data"]["i"] for m in ext_peer.recorded if m["type"] == "log"] == list(range(1, 31))


def test_replay_4_terminal_covered_by_welcome_ends_the_job(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """REPLAY-4, EXIT-3: the ack of the terminal was lost but the welcome's lastSeq covers it:
    nothing is resent and the worker exits."""
    ext_peer.send_acks = False
    worker = workers(ext_payload(ext_peer, {"scenario": "complete"}, short_tmp))
    ext_peer.wait_type("completed")
    ext_peer.drop()
    ext_peer.wait_for(lambda: len(ext_peer.welcomed_at) >= 2, "a reconnect")
    welcomed_at = ext_peer.welcomed_at[1]
    assert worker.wait() == 0
    assert worker.exited_at is not None and worker.exited_at - welcomed_at < 1.0
    assert [m["type"] for m in on_connection(ext_peer, 1)] == ["hello"]


@pytest.mark.parametrize(("scenario", "status"), [("complete", 0), ("fail", 1)])
def test_spool_2_when_the_server_never_comes_back(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker], scenario: str, status: int
) -> None:
    """RECONNECT-3, SPOOL-2, EXIT-2: hello then every unacknowledged message, atomically."""
    ext_peer.ack_if = lambda message: False
    # 2 s: the window is also the first connection's (RECONNECT-6), which a
    # loaded machine can take longer than 300 ms to get up
    payload = ext_payload(ext_peer, {"scenario": scenario}, short_tmp, reconnectWindowMs=2000)
    worker = workers(payload)
    ext_peer.wait_for(lambda: any(t in TERMINAL for t in ext_peer.types()), "the terminal message")
    ext_peer.stop()
    assert worker.wait() == status
    spool = Path(payload["spoolPath"])
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    assert not Path(str(spool) + ".tmp").exists()
    lines = [json.loads(line) for line in spool.read_bytes().splitlines()]
    assert lines[0]["type"] == "hello" and lines[0]["token"] == TOKEN
    sent = [m for m in ext_peer.messages() if "seq" in m]
    assert lines[1:] == sent, "exactly as they were sent"
    assert lines[-1]["type"] == TERMINAL[status]


def test_replay_3_unacknowledged_terminal_is_resent_on_a_new_connection(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """REPLAY-3, EXIT-3: no ack within max(2000, interval) -> reconnect and replay; exit once
    acknowledged."""
    ext_peer.ack_if = lambda message: (
        message["type"] not in TERMINAL or len(ext_peer.welcomed_at) > 1
    )
    worker = workers(ext_payload(ext_peer, {"scenario": "complete"}, short_tmp))
    ext_peer.wait_type("completed")
    sent_at = time.monotonic()
    ext_peer.wait_for(lambda: len(ext_peer.welcomed_at) >= 2, "a reconnect")
    assert 1.9 <= ext_peer.welcomed_at[1] - sent_at < 2.0 + 1.5
    assert worker.wait() == 0
    # The peer loses the whole read that held the terminal (as a failed store
    # would), so whatever came with it is replayed too (REPLAY-4), in order.
    replayed = [m["type"] for m in on_connection(ext_peer, 1)]
    assert replayed[0] == "hello" and replayed[-1] == "completed"
    assert replayed.count("completed") == 1
    assert [m["type"] for m in ext_peer.recorded].count("completed") == 1


def test_exit_3_promptly_after_the_ack(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """EXIT-3: within 1000 ms of the terminal's acknowledgement."""
    payload = ext_payload(ext_peer, {"scenario": "complete"}, short_tmp, heartbeatIntervalMs=5000)
    worker = workers(payload)
    ext_peer.wait_type("completed")
    acked_at = time.monotonic()
    assert worker.wait() == 0
    assert worker.exited_at is not None and worker.exited_at - acked_at < 1.0


def test_cancel_3_reaches_poll_and_callback(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """CTRL-4, CANCEL-3: a poll, a wait and a callback; the job code decides how to stop."""
    script = (
        "import threading\n"
        "from extjob_worker import run_job\n"
        "called = threading.Event()\n"
        "def handler(job):\n"
        "    def callback(reason):\n"
        "        job.warn('cancel callback', reason=reason)\n"
        "        called.set()\n"
        "    job.on_cancel(callback)\n"
        "    assert job.wait_for_cancel(20) and called.wait(20)\n"
        "    return {'reason': job.cancel_reason, 'deadline': job.cancel_deadline_ms,\n"
        "            'polled': job.cancel_requested}\n"
        "run_job(handler)\n"
    )
    worker = workers(ext_payload(ext_peer, {}, short_tmp), script=script)
    ext_peer.wait_type("started")
    ext_peer.send(ext_peer.server_message("cancel", reason="timeout", deadlineMs=5000))
    assert worker.wait() == 0
    result = ext_peer.messages("completed")[0]["result"]
    assert result == {"reason": "timeout", "deadline": 5000, "polled": True}
    ext_peer.wait_type("log")
    assert ext_peer.messages("log")[0]["data"] == {"reason": "timeout"}


def test_ctrl_6_frame_3_unknown_and_malformed_server_lines_are_ignored(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """CTRL-6, FRAME-3, LIMIT-3: the worker keeps reading past anything it does not know."""
    worker = workers(ext_payload(ext_peer, {"scenario": "cancel"}, short_tmp))
    ext_peer.wait_type("started")
    ext_peer.send_raw(b"not json\n[1,2]\n\n  \r\n")
    ext_peer.send_raw(b'{"type":"x-private","jobId":"j_1","timestamp":1}\n')
    ext_peer.send_raw(b'{"type":"brand-new","jobId":"j_1","timestamp":1,"x":{}}\n')
    ext_peer.send_raw(b'{"type":"ack","jobId":"j_1","timestamp":1,"seq":"7"}\n')
    ext_peer.send(ext_peer.server_message("error", code="invalid_message", message="just so"))
    ext_peer.send_raw(b'{"type":"x-big","pad":"' + b"p" * (17 << 20) + b'"}\n')
    ext_peer.send(ext_peer.server_message("cancel", reason="requested", deadlineMs=1000))
    assert worker.wait() == 1
    assert ext_peer.messages("failed")[0]["error"] == "cancelled"
    assert len(ext_peer.welcomed_at) == 1, "never reconnected"


def test_ckpt_2_checkpoint_then_resume(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """CKPT-1, CKPT-2: save a checkpoint and fail; the next attempt sees it."""
    first = ext_payload(ext_peer, {"scenario": "checkpoint", "value": [1, "two"]}, short_tmp)
    assert workers(first).wait() == 1
    checkpoint = ext_peer.messages("checkpoint")[0]
    assert checkpoint["data"] == [1, "two"] and checkpoint["seq"] == 2
    assert ext_peer.messages("failed")[0]["error"] == "checkpoint saved"
    ext_peer.new_attempt()
    second = ext_payload(
        ext_peer, {"scenario": "checkpoint"}, short_tmp, attempt=2, checkpoint=checkpoint["data"]
    )
    assert workers(second).wait() == 0
    assert ext_peer.messages("completed")[0]["result"] == {"resumedFrom": [1, "two"]}


def test_limit_1_large_result_and_result_too_large(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """LIMIT-1: a 3 MB result goes through whole; one over maxLineBytes fails the job."""
    big = ext_payload(ext_peer, {"scenario": "large", "bytes": 3_000_000}, short_tmp)
    assert workers(big).wait() == 0
    assert ext_peer.messages("completed")[0]["result"] == "x" * 3_000_000
    ext_peer.new_attempt()
    over = ext_payload(
        ext_peer, {"scenario": "large", "bytes": 70_000}, short_tmp, maxLineBytes=65536
    )
    assert workers(over).wait() == 1
    error = ext_peer.messages("failed")[0]["error"]
    assert error.startswith("result too large: ") and int(error.split()[3]) > 70_000


def test_reconnect_2_server_gone_in_the_middle_of_a_line(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """RECONNECT-2: a peer that vanishes mid-write is not fatal; the line is replayed whole."""
    ext_peer.cut_partial_at = 1 << 20
    script = (
        "from extjob_worker import run_job\n"
        "run_job(lambda job: job.info('y' * 4_000_000) or 'done')\n"
    )
    worker = workers(ext_payload(ext_peer, {}, short_tmp), script=script)
    assert worker.wait() == 0
    logs = [m for m in ext_peer.recorded if m["type"] == "log"]
    assert len(logs) == 1 and logs[0]["message"] == "y" * 4_000_000
    assert len(ext_peer.welcomed_at) == 2


def test_wrap_4_many_threads_never_interleave(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """WRAP-4: 8 threads x 200 logs: whole lines, strictly increasing seq, nothing lost."""
    script = (
        "import threading\n"
        "from extjob_worker import run_job\n"
        "def spam(job, n):\n"
        "    for i in range(200):\n"
        "        job.info(f'{n}:{i}' + '\\t\"\\\\' * 50, n=n, i=i)\n"
        "def handler(job):\n"
        "    threads = [threading.Thread(target=spam, args=(job, n)) for n in range(8)]\n"
        "    for t in threads: t.start()\n"
        "    for t in threads: t.join()\n"
        "run_job(handler)\n"
    )
    assert workers(ext_payload(ext_peer, {}, short_tmp), script=script).wait() == 0
    messages = ext_peer.messages()
    seqs = [m["seq"] for m in messages if "seq" in m]
    assert seqs == list(range(1, len(seqs) + 1))
    logs = {(m["data"]["n"], m["data"]["i"]) for m in messages if m["type"] == "log"}
    assert logs == {(n, i) for n in range(8) for i in range(200)}
    check_stream(messages)


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (
            "    job.progress(10)\n    job.complete({'ctx': True})\n",
            0,
            ("completed", {"ctx": True}),
        ),
        ("    job.info('no explicit end')\n", 0, ("completed", None)),
        ("    raise KeyError('missing')\n", 1, ("failed", "'missing'")),
        ("    job.fail('explicit', retryable=False)\n", 1, ("failed", "explicit")),
    ],
    ids=["complete", "implicit", "exception", "fail"],
)
def test_wrap_2_context_manager_form(
    ext_peer: Peer,
    short_tmp: Path,
    workers: Callable[..., Worker],
    body: str,
    status: int,
    expected: tuple[str, Any],
) -> None:
    """WRAP-2, EXIT-2 for ``with Job.from_environment() as job``."""
    script = "from extjob_worker import Job\nwith Job.from_environment() as job:\n" + body
    assert workers(ext_payload(ext_peer, {}, short_tmp), script=script).wait() == status
    kind, value = expected
    terminal = ext_peer.messages(kind)[0]
    assert terminal.get("result" if kind == "completed" else "error") == value


def test_hb_2_cancel_3_async_form_keeps_heartbeating_and_sees_cancel(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """HB-2 and CANCEL-3 for ``await run_job_async(handler)``."""
    script = (
        "import asyncio\n"
        "from extjob_worker import run_job_async\n"
        "async def handler(job):\n"
        "    await asyncio.sleep(0.3)\n"
        "    job.info('slept')\n"
        "    return await job.wait_for_cancel_async()\n"
        "asyncio.run(run_job_async(handler))\n"
    )
    worker = workers(ext_payload(ext_peer, {}, short_tmp), script=script)
    ext_peer.wait_type("log")
    ext_peer.send(ext_peer.server_message("cancel", reason="shutdown", deadlineMs=1000))
    assert worker.wait() == 0
    assert ext_peer.messages("completed")[0]["result"] == "shutdown"
    assert ext_peer.types().count("heartbeat") >= 3


def test_auth_4_refused_is_not_fatal(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """AUTH-4 seen from the worker: an ``error`` with code auth closes the connection; the
    worker retries (RECONNECT-1) and, when welcomed, goes on."""
    worker = workers(ext_payload(ext_peer, {"scenario": "sleep", "ms": 600}, short_tmp))
    ext_peer.wait_type("started")
    ext_peer.send(ext_peer.server_message("error", code="auth", message="stale token"))
    assert worker.wait() == 0
    assert len(ext_peer.welcomed_at) >= 2
    assert b"stale token" in worker.output()[1]


def test_neg_2_no_spool_without_the_feature(
    ext_peer: Peer, short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """NEG-2: without the spool feature nothing is written (SPOOL-2 needs it); exit status still
    EXIT-2."""
    ext_peer.ack_if = lambda message: False
    payload = ext_payload(
        ext_peer,
        {"scenario": "complete"},
        short_tmp,
        features=["auth", "replay"],
        reconnectWindowMs=0,
    )
    worker = workers(payload)
    ext_peer.wait_type("completed")
    ext_peer.stop()
    assert worker.wait() == 0
    assert not os.path.exists(payload["spoolPath"])

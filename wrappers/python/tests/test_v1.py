"""A v1 worker against a peer that never writes back (the original server)."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pyworker_testlib import Peer, Worker, check_stream, v1_payload

from extjob_worker import LEVELS


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_neg_3_trans_1_v1_worker_completes(
    short_tmp: Path, workers: Callable[..., Worker], tcp: bool
) -> None:
    """TRANS-1 both forms; NEG-3: no hello, no seq, never waits for the server."""
    peer = Peer(short_tmp, tcp=tcp)
    try:
        worker = workers(v1_payload(peer, {"scenario": "complete"}))
        assert worker.wait() == 0
        peer.wait_type("completed")
        messages = peer.messages()
        assert [m["type"] for m in messages] == ["started", "progress", "completed"]
        assert all("seq" not in m for m in messages)
        assert messages[1]["percent"] == 50 and messages[1]["message"] == "halfway"
        assert messages[2]["result"] == {"ok": True}
        check_stream(messages)
        assert worker.output()[0] == b"", "FIX-3: nothing on stdout"
    finally:
        peer.close()


def test_hb_2_heartbeats_from_started_to_terminal(
    peer: Peer, workers: Callable[..., Worker]
) -> None:
    """HB-2: heartbeats at the payload's interval while the job code sleeps, none outside."""
    worker = workers(v1_payload(peer, {"scenario": "sleep", "ms": 1500}, heartbeatIntervalMs=100))
    assert worker.wait() == 0
    peer.wait_type("completed")
    with peer.cond:
        received = list(peer.received)
    types = [r.type for r in received]
    assert types[0] == "started" and types[-1] == "completed"
    beats = [r.at for r in received if r.type == "heartbeat"]
    assert 6 <= len(beats) <= 1500 / 50 + 2, len(beats)
    times = [received[0].at, *beats, received[-1].at]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The interval, plus a margin for a busy box (a gap of 0.41 s was seen at
    # load 14 against an interval of 50 ms); a wrapper that stops beating
    # while the job code sleeps leaves a gap of 1.5 s.
    assert max(gaps) < 0.1 + 0.6, gaps


def test_wrap_2_exception_fails_with_stack(peer: Peer, workers: Callable[..., Worker]) -> None:
    """WRAP-2, EXIT-2: an exception fails the job with its text and a stack; exit 1."""
    worker = workers(v1_payload(peer, {"scenario": "fail", "message": "disk full"}))
    assert worker.wait() == 1
    peer.wait_type("failed")
    failed = peer.messages("failed")[0]
    assert failed["error"] == "disk full"
    assert "Traceback" in failed["stack"] and "RuntimeError: disk full" in failed["stack"]
    assert peer.types()[-1] == "failed"


def test_life_1_fix_2_crash_sends_nothing_more(peer: Peer, workers: Callable[..., Worker]) -> None:
    """FIX-2 crash; LIFE-1: started is on the wire before the job code runs."""
    worker = workers(v1_payload(peer, {"scenario": "crash", "code": 7}))
    assert worker.wait() == 7
    peer.wait_for(lambda: 0 in peer.closed, "end of file on the connection")
    assert peer.types() == ["started"]


def test_exit_3_exits_promptly_after_terminal(peer: Peer, workers: Callable[..., Worker]) -> None:
    """EXIT-3: with a v1 server, exit within 1000 ms of writing the terminal message."""
    worker = workers(v1_payload(peer, {"scenario": "complete"}, heartbeatIntervalMs=5000))
    peer.wait_type("completed")
    received_at = time.monotonic()
    assert worker.wait() == 0
    assert worker.exited_at is not None and worker.exited_at - received_at < 1.0


def test_reconnect_4_v1_resends_started_and_buffered_messages(
    peer: Peer, workers: Callable[..., Worker]
) -> None:
    """RECONNECT-1, RECONNECT-4 (LIFE-3): the job keeps running through an outage; started
    again, then what was logged while the server was away."""
    worker = workers(
        v1_payload(
            peer, {"scenario": "logs", "count": 40, "intervalMs": 20}, heartbeatIntervalMs=50
        )
    )
    peer.wait_for(lambda: peer.types().count("log") >= 5, "5 logs")
    peer.stop()
    time.sleep(0.3)  # the outage itself: the job logs ~15 lines meanwhile
    peer.start()
    assert worker.wait() == 0
    peer.wait_type("completed")
    with peer.cond:
        second = [r.message for r in peer.received if r.conn == 1]
    assert second[0]["type"] == "started"
    logs = [m["data"]["i"] for m in second if m["type"] == "log"]
    assert logs == list(range(logs[0], 41)) and len(logs) >= 10, logs
    check_stream(peer.messages())


def test_cancel_3_sigterm_is_a_cancel_request(peer: Peer, workers: Callable[..., Worker]) -> None:
    """CANCEL-3: SIGTERM does not kill the worker; the job code sees a cancel and decides."""
    worker = workers(v1_payload(peer, {"scenario": "cancel", "ms": 20000}))
    peer.wait_type("started")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait() == 1
    peer.wait_type("failed")
    assert peer.messages("failed")[0]["error"] == "cancelled"


def test_wrap_5_closed_stdout_and_stderr(peer: Peer, workers: Callable[..., Worker]) -> None:
    """WRAP-5: closed standard streams do not stop the wrapper, even on the failure path."""
    script = (
        "import os\n"
        "os.close(1); os.close(2)\n"
        "from extjob_worker import run_job\n"
        "def handler(job):\n"
        "    print('to a closed stdout', flush=True)\n"
        "    raise ValueError('after printing')\n"
        "run_job(handler)\n"
    )
    worker = workers(v1_payload(peer, {}), script=script)
    assert worker.wait() == 1
    peer.wait_type("failed")
    assert peer.messages("failed")[0]["error"] == "after printing"
    assert all(r.message is not None for r in peer.received), "nothing but protocol lines"


def test_wrap_5_broken_stdout_does_not_change_the_exit_status(
    peer: Peer, workers: Callable[..., Worker]
) -> None:
    """WRAP-5: job output left in a buffer for a pipe nobody reads (the server is gone)
    does not turn a completed job's exit 0 into the interpreter's 120 at exit."""
    script = (
        "import os, sys\n"
        "r, w = os.pipe(); os.close(r); os.dup2(w, 1); os.dup2(w, 2)\n"
        "sys.stdout = open(1, 'w', buffering=8192, closefd=False)\n"
        "from extjob_worker import run_job\n"
        "def handler(job):\n"
        "    print('buffered for a pipe nobody reads')\n"
        "    return 'done'\n"
        "run_job(handler)\n"
    )
    worker = workers(v1_payload(peer, {}), script=script)
    assert worker.wait() == 0
    peer.wait_type("completed")
    assert peer.messages("completed")[0]["result"] == "done"


def test_wrap_4_killed_mid_send_leaves_only_whole_lines(
    peer: Peer, workers: Callable[..., Worker]
) -> None:
    """WRAP-4: four threads sending 100 kB lines; SIGKILL mid-stream; every line is whole."""
    script = (
        "import threading\n"
        "from extjob_worker import run_job\n"
        "def spam(job, n):\n"
        "    while True:\n"
        "        job.info(str(n) * 100_000, thread=n)\n"
        "def handler(job):\n"
        "    threads = [threading.Thread(target=spam, args=(job, n)) for n in range(4)]\n"
        "    for t in threads: t.start()\n"
        "    for t in threads: t.join()\n"
        "run_job(handler)\n"
    )
    worker = workers(v1_payload(peer, {}), script=script)
    peer.wait_for(lambda: len(peer.types()) >= 40, "40 lines")
    worker.proc.kill()
    worker.wait()
    peer.wait_for(lambda: 0 in peer.closed, "end of file on the connection")
    with peer.cond:
        received = list(peer.received)
    for r in received[1:]:
        assert r.type == "log", r.raw[:80]
        n = r.message["data"]["thread"]
        assert r.message["message"] == str(n) * 100_000


def test_readme_example_runs(peer: Peer, workers: Callable[..., Worker]) -> None:
    """The README's worker is a working worker."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Python wrapper", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    worker = workers(v1_payload(peer, {"images": ["a.png", "b.png"]}), script=example)
    assert worker.wait() == 0
    peer.wait_type("completed")
    assert peer.messages("completed")[0]["result"] == {"resized": 2}
    assert [m["message"] for m in peer.messages("progress")] == ["resizing a.png", "resizing b.png"]


def test_msg_6_levels_with_data_named_like_parameters(
    peer: Peer, workers: Callable[..., Worker]
) -> None:
    """MSG-6, FIX-2 levels: data may use any key, even ``level`` and ``message``."""
    assert workers(v1_payload(peer, {"scenario": "levels"})).wait() == 0
    peer.wait_type("completed")
    logs = peer.messages("log")
    assert [(m["level"], m["data"]) for m in logs] == [(lv, {"level": lv}) for lv in LEVELS]


def test_reconnect_6_no_server_at_start_exits_1_with_one_line(
    short_tmp: Path, workers: Callable[..., Worker]
) -> None:
    """RECONNECT-6: the first connection never up within the window (retried per RECONNECT-1):
    exit 1 with one line on stderr; the job code never runs."""
    payload = {
        "jobId": "j_1",
        "name": "fixture",
        "data": {"scenario": "crash", "code": 9},
        "socketPath": str(short_tmp / "nobody.sock"),
        "reconnectWindowMs": 400,
    }
    started = time.monotonic()
    worker = workers(payload)
    assert worker.wait() == 1
    assert time.monotonic() - started >= 0.4
    lines = worker.output()[1].decode().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], lines

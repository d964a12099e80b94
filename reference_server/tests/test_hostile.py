"""Hostile input on a job's socket (SRV-5, SRV-6, AUTH-4, LIMIT-1, LIFE-4, CTRL-5).

A server runs in a background thread; the tests talk to it with plain
blocking sockets, like any client could, and check that the server stays up,
that the garbage is rejected, and that no other job is touched.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_testlib import PYTHON, WORKERS, kill_groups, make_config, wait_for

from extjob.server import JobServer

MAX_LINE = 65536
SLEEPER = {"sleep_ms": 120_000, "heartbeat_ms": 100}


class ThreadedServer:
    """A JobServer on its own event loop thread, with two sleeping v1 jobs."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = JobServer(make_config(root, max_line_bytes=MAX_LINE))
        self.server.register_external("v1", command=PYTHON, args=[str(WORKERS / "v1_worker.py")])
        self.call(self.server.start())
        self.victim = self.call(self.server.enqueue("v1", SLEEPER))
        self.bystander = self.call(self.server.enqueue("v1", SLEEPER))
        for job_id in (self.victim, self.bystander):
            self.call(wait_for(lambda j=job_id: self._connected(j), what="the workers"))

    async def _connected(self, job_id: str) -> bool:
        run = self.server.runs.get(job_id)
        return run is not None and bool(run.connections)

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def socket_path(self, job_id: str) -> str:
        return self.server.runs[job_id].rec.socket_path

    def token(self, job_id: str) -> str:
        return self.server.runs[job_id].rec.token

    def snapshot(self, job_id: str) -> tuple[Any, ...]:
        job = self.call(self.server.get(job_id))
        logs = self.call(self.server.logs(job_id, limit=1_000_000))
        return (
            job.status,
            job.progress_percent,
            job.progress_message,
            job.result,
            job.checkpoint,
            len(logs),
        )

    def close(self) -> None:
        pids = [run.rec.pid for run in self.server.runs.values()]
        self.call(self.server.stop())
        kill_groups(pids)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="xh", dir="/tmp"))
    server = ThreadedServer(root)
    yield server
    server.close()
    shutil.rmtree(root, ignore_errors=True)


def exchange(path: str, data: bytes) -> list[dict[str, Any]]:
    """Send ``data``, half-close, and read what the server says until it closes.

    The server handles every byte it received before it sees end of file, so
    when this returns, everything sent has been processed.
    """
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(path)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed on us (AUTH-4): read what it said
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return [json.loads(line) for line in received.splitlines() if line.strip()]


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def hello(job_id: str, token: str) -> bytes:
    return line(
        {
            "type": "hello",
            "jobId": job_id,
            "timestamp": 1,
            "token": token,
            "protocolVersion": 1,
            "features": ["auth", "replay", "control"],
            "pid": 1,
        }
    )


def test_auth_4_wrong_token_is_refused_and_closed(hostile):
    before = hostile.snapshot(hostile.victim)
    replies = exchange(
        hostile.socket_path(hostile.victim),
        hello(hostile.victim, "x" * 32)
        + line({"type": "completed", "jobId": hostile.victim, "timestamp": 2, "seq": 1}),
    )
    assert [(r["type"], r["code"], r["requirement"]) for r in replies] == [
        ("error", "auth", "AUTH-4")
    ]
    assert hostile.snapshot(hostile.victim) == before


def test_auth_4_a_hello_for_another_job_is_refused(hostile):
    before = hostile.snapshot(hostile.bystander)
    replies = exchange(
        hostile.socket_path(hostile.victim),
        hello(hostile.bystander, hostile.token(hostile.bystander)),
    )
    assert [(r["type"], r["code"]) for r in replies] == [("error", "auth")]
    assert hostile.snapshot(hostile.bystander) == before


def test_srv_5_v1_messages_for_another_job_change_nothing(hostile):
    before = hostile.snapshot(hostile.bystander)
    forged = b"".join(
        line({"type": kind, "jobId": hostile.bystander, "timestamp": 1, **fields})
        for kind, fields in [
            ("started", {}),
            ("progress", {"percent": 99}),
            ("log", {"level": "info", "message": "forged"}),
            ("completed", {"result": "forged"}),
        ]
    )
    assert exchange(hostile.socket_path(hostile.victim), forged) == []  # NEG-3: silent to v1
    assert hostile.snapshot(hostile.bystander) == before


def test_time_2_a_workers_timestamps_are_shown_as_sent_and_decide_nothing(hostile):
    # The largest timestamp MSG-1 allows, then the epoch, then 5: each log is
    # kept with the timestamp it carried (for display), in the order received.
    stamps = [2**53 - 1, 0, 5]
    job_id = hostile.victim
    before = hostile.call(hostile.server.get(job_id))
    sent = b"".join(
        line(
            {"type": "log", "jobId": job_id, "timestamp": ts, "level": "info", "message": f"t2 {i}"}
        )
        for i, ts in enumerate(stamps)
    )
    assert exchange(hostile.socket_path(job_id), sent) == []

    async def stamped() -> list[Any]:
        logs = await hostile.server.logs(job_id, limit=1_000_000)
        return [e for e in logs if e.message.startswith("t2 ")]

    hostile.call(wait_for(lambda: _has(stamped, len(stamps)), what="the three logs"))
    logs = hostile.call(stamped())
    assert [(e.message, e.timestamp) for e in logs] == [
        (f"t2 {i}", ts) for i, ts in enumerate(stamps)
    ]
    after = hostile.call(hostile.server.get(job_id))
    assert (after.status, after.started_at) == ("running", before.started_at)


async def _has(entries: Callable[[], Awaitable[list[Any]]], n: int) -> bool:
    return len(await entries()) >= n


def test_srv_6_garbage_is_rejected_with_reasons_and_the_connection_stays(hostile):
    victim = hostile.victim
    before = hostile.snapshot(hostile.bystander)
    replies = exchange(
        hostile.socket_path(victim),
        hello(victim, hostile.token(victim))
        + b"not json\n"
        + b"[1,2]\n"
        + line({"type": "explode", "jobId": victim, "timestamp": 1})
        + b"x" * (MAX_LINE + 10)
        + b"\n"
        + line({"type": "progress", "jobId": victim, "timestamp": 1})  # no percent
        + line({"type": "progress", "jobId": hostile.bystander, "timestamp": 1, "percent": 5})
        + b"   \n"
        + line({"type": "x-private", "jobId": victim, "timestamp": 1})
        + line(
            {
                "type": "progress",
                "jobId": victim,
                "timestamp": 1,
                "percent": 42,
                "message": "still here",
                "seq": 10**6,
            }
        ),
    )
    assert replies[0]["type"] == "welcome"
    errors = [(r["code"], r["requirement"]) for r in replies if r["type"] == "error"]
    assert [code for code, _ in errors] == [
        "invalid_json",
        "invalid_message",
        "unknown_type",
        "line_too_long",
        "invalid_message",
        "wrong_job",
    ]
    assert all(requirement for _, requirement in errors)
    assert {k: replies[-1][k] for k in ("type", "seq")} == {"type": "ack", "seq": 10**6}
    job = hostile.call(hostile.server.get(victim))
    assert (job.status, job.progress_percent, job.progress_message) == ("running", 42, "still here")
    assert hostile.snapshot(hostile.bystander) == before
    assert not hostile.errors


def test_replay_5_duplicates_are_acked_again_not_recorded(hostile):
    victim = hostile.victim
    logs = len(hostile.call(hostile.server.logs(victim, limit=10**6)))
    run = hostile.server.runs[victim]
    seq = run.attempt.recorded_seq + 1
    entry = line(
        {
            "type": "log",
            "jobId": victim,
            "timestamp": 1,
            "seq": seq,
            "level": "info",
            "message": "once",
        }
    )
    for _ in range(3):
        replies = exchange(
            hostile.socket_path(victim), hello(victim, hostile.token(victim)) + entry
        )
        assert replies[0]["lastSeq"] == seq - 1 or replies[0]["lastSeq"] == seq
        assert replies[-1] == {**replies[-1], "type": "ack", "seq": seq}
    assert len(hostile.call(hostile.server.logs(victim, limit=10**6))) == logs + 1


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
TYPES = [
    "hello",
    "started",
    "progress",
    "heartbeat",
    "log",
    "checkpoint",
    "x-private",
    "nope",
    "welcome",
    "",
]


@st.composite
def hostile_message(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": draw(st.sampled_from(TYPES) | JSONISH),
        "jobId": draw(st.sampled_from(["VICTIM", "OTHER", "", "j_nope"]) | JSONISH),
        "timestamp": draw(st.integers(-2, 2**64) | JSONISH),
    }
    optional = {
        "seq": st.integers(-3, 2**63) | JSONISH,
        "percent": st.floats() | st.integers(-10, 1000) | JSONISH,
        "message": st.text(max_size=50) | JSONISH,
        "level": st.sampled_from(["debug", "info", "warn", "error", "fatal"]) | JSONISH,
        "data": JSONISH,
        "token": st.sampled_from(["TOKEN", "x" * 16]) | JSONISH,
        "features": st.lists(st.sampled_from(["auth", "replay", "control", "zzz"])) | JSONISH,
        "protocolVersion": st.integers(0, 2) | JSONISH,
        "pid": st.integers(-1, 2**40) | JSONISH,
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            message[key] = draw(strategy)
    return message


RAW = st.binary(max_size=300) | st.just(b"y" * (MAX_LINE + 1)) | st.just(b"\xff\xfe\n")


@settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    greeting=st.sampled_from(["none", "hello", "bad-hello"]),
    parts=st.lists(hostile_message() | RAW, min_size=1, max_size=12),
)
def test_srv_5_srv_6_fuzz_hostile_lines_and_sequences_never_touch_another_job(
    hostile, greeting, parts
):
    victim, other = hostile.victim, hostile.bystander
    before = hostile.snapshot(other)
    data = b""
    if greeting != "none":
        token = hostile.token(victim) if greeting == "hello" else "z" * 20
        data += hello(victim, token)
    for part in parts:
        if isinstance(part, bytes):
            data += part
            continue
        text = json.dumps(part).replace('"VICTIM"', json.dumps(victim))
        text = text.replace('"OTHER"', json.dumps(other)).replace(
            '"TOKEN"', json.dumps(hostile.token(victim))
        )
        data += text.encode() + b"\n"
    exchange(hostile.socket_path(victim), data)
    assert hostile.snapshot(other) == before
    assert hostile.call(hostile.server.get(victim)).status == "running"
    assert not hostile.errors

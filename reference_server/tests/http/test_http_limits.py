"""File-descriptor floods: ``extjob serve`` under a lowered RLIMIT_NOFILE.

Each test runs a real server process whose open files limit is lowered the
way a small machine would have it, floods it with real connections, and
checks that jobs keep running, that the flood is bounded, and that the log
stays short (a flood once wrote 13,000 tracebacks in 8 s).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from http_helpers import TOKEN, WAIT, Server, start_server, stop_server, wait_for

WORKERS = Path(__file__).resolve().parents[1] / "workers"


@dataclass
class Limited:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    log: Path
    socket_dir: str

    def request(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        """One request on a connection of its own (the helpers' urllib keeps none open)."""
        with socket.create_connection((self.host, self.port), timeout=WAIT) as sock:
            data = b"" if body is None else json.dumps(body).encode()
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + data
            )
            reply = _read_all(sock)
        head, _, payload = reply.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(payload) if payload else None

    def job(self, job_id: str) -> dict[str, object]:
        status, job = self.request("GET", f"/api/jobs/{job_id}")
        assert status == 200, job
        assert isinstance(job, dict)
        return job

    def log_text(self) -> str:
        return self.log.read_text()


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[object]:
    servers: list[Server] = []
    socket_dirs: list[str] = []

    def start(soft: int, hard: int, http: str = "", jobs: str = "") -> Limited:
        sockets = tempfile.mkdtemp(prefix="xl-")
        socket_dirs.append(sockets)
        (tmp_path / "extjob.toml").write_text(
            f'database = "extjob.db"\nspool_dir = "spool"\nsocket_dir = {json.dumps(sockets)}\n'
            f'poll_interval_ms = 50\n[http]\nport = 0\ntoken = "{TOKEN}"\n{http}\n{jobs}'
        )

        def lower_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        server = start_server(tmp_path, preexec_fn=lower_limit)
        servers.append(server)
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        assert host is not None and port is not None
        return Limited(server.process, host, port, tmp_path / "server.log", sockets)

    yield start
    for server in servers:
        stop_server(server)
    for directory in socket_dirs:
        shutil.rmtree(directory, ignore_errors=True)


QUICK_JOB = """
[jobs.quick]
command = "bash"
args = ["-c", "echo ran"]
"""


def test_idle_api_connections_are_capped_and_timed_out_and_a_due_job_still_runs(launch):
    server = launch(256, 256, http="idle_timeout_ms = 2000", jobs=QUICK_JOB)
    due_in_ms = 1500
    status, job = server.request(
        "POST", "/api/jobs", {"name": "quick", "runAt": int(time.time() * 1000) + due_in_ms}
    )
    assert status == 201
    # More idle, unauthenticated connections than the server has descriptors.
    flood = [socket.create_connection((server.host, server.port), timeout=WAIT) for _ in range(300)]
    most = _open_descriptors(server.process.pid)
    # Each gets 503 at once (over the cap) or is closed once idle; meanwhile
    # the job falls due.
    answers = []
    for sock in flood:
        most = max(most, _open_descriptors(server.process.pid))
        answers.append(_read_until_closed(sock))
        sock.close()
    busy = sum(answer.startswith(b"HTTP/1.1 503 ") for answer in answers)
    assert answers.count(b"") + busy == len(flood)
    assert busy > 0  # over the cap (a quarter of the open files limit): 503 at once
    assert most < 256 // 4 + 128 + 32, most  # the cap, a backlog's burst, the server's own
    done = wait_for(lambda: (j := server.job(job["id"]))["status"] in ("completed", "failed") and j)
    assert (done["status"], done.get("error")) == ("completed", None)
    text = server.log_text()
    assert "Traceback" not in text
    assert len(text.splitlines()) < 30, text


def _read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(WAIT)
    try:
        return _read_all(sock)
    except ConnectionResetError:
        return b""


def _connect_unix(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        sock.connect(path)
    return sock


def _open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_the_server_raises_its_open_files_limit_and_workers_get_the_usual_one(launch):
    server = launch(
        256,
        4096,
        jobs='[jobs.limit]\ncommand = "bash"\nargs = ["-c", "echo soft=$(ulimit -Sn)"]\n',
    )
    limits = Path(f"/proc/{server.process.pid}/limits").read_text()
    assert [line.split()[3:5] for line in limits.splitlines() if "open files" in line] == [
        ["4096", "4096"]
    ]
    assert "open files limit raised from 256 to 4096" in server.log_text()
    status, job = server.request("POST", "/api/jobs", {"name": "limit"})
    assert status == 201
    wait_for(lambda: server.job(job["id"])["status"] == "completed")
    status, logs = server.request("GET", f"/api/jobs/{job['id']}/logs")
    assert [e["message"] for e in logs["logs"] if e["source"] == "stdout"] == ["soft=256"]


def test_a_spawn_out_of_descriptors_is_retried_not_failed(launch):
    sleeper = (
        f"[jobs.sleeper]\ncommand = {json.dumps(sys.executable)}\n"
        f"args = [{json.dumps(str(WORKERS / 'v1_worker.py'))}]\n"
    )
    limit = 128
    server = launch(limit, limit, jobs=QUICK_JOB + sleeper)
    status, sleeping = server.request(
        "POST", "/api/jobs", {"name": "sleeper", "data": {"sleep_ms": 60_000}}
    )
    assert status == 201
    wait_for(lambda: server.job(sleeping["id"])["status"] == "running")
    # An API connection opened before the flood can still enqueue during it.
    api = http.client.HTTPConnection(server.host, server.port, timeout=WAIT)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    api.request("GET", "/api/health", headers=headers)
    assert api.getresponse().read()
    # A worker's own socket has no cap (its clients are the server's user):
    # a leak of connections there takes every descriptor the server has.
    socket_path = os.path.join(server.socket_dir, f"{sleeping['id']}.1.sock")
    flood = []
    deadline = time.monotonic() + WAIT
    while _open_descriptors(server.process.pid) < limit:
        assert time.monotonic() < deadline, "the server never ran out of descriptors"
        sock = socket.socket(socket.AF_UNIX)
        sock.setblocking(False)
        try:
            sock.connect(socket_path)
        except BlockingIOError:  # the backlog is full until the server accepts
            sock.close()
            time.sleep(0.01)
            continue
        flood.append(sock)
    # Connections beyond: queued in the backlog, they fail every accept() meanwhile.
    flood += [_connect_unix(socket_path) for _ in range(10)]
    api.request("POST", "/api/jobs", json.dumps({"name": "quick"}), headers)
    reply = api.getresponse()
    job = json.loads(reply.read())
    assert reply.status == 201, job
    wait_for(lambda: "cannot spawn now" in server.log_text())
    for sock in flood:
        sock.close()
    done = wait_for(lambda: (j := server.job(job["id"]))["status"] in ("completed", "failed") and j)
    assert (done["status"], done["attempt"], done.get("error")) == ("completed", 1, None)
    text = server.log_text()
    assert "Too many open files" in text
    assert "Traceback" in text  # the first accept failures, in full...
    assert len(text.splitlines()) < 200, text  # ...but not thousands of them
    api.close()
    server.request("POST", f"/api/jobs/{sleeping['id']}/cancel")

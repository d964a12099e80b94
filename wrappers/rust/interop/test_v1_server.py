"""The Rust worker against a v1 server that never writes back, as the original
TypeScript server does: the original's payload (four fields), its environment,
no hello, no seq, no waiting for anything (NEG-3), and a server restart that the
worker survives by reconnecting and saying started again (LIFE-3).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

DEADLINE = 30.0


class SilentServer:
    """Listens on a Unix socket, records every line of every connection, never writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections: list[list[tuple[float, dict]]] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._clients: list[socket.socket] = []
        self.listen()

    def listen(self) -> None:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(self.path))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                lines: list[tuple[float, dict]] = []
                self.connections.append(lines)
                self._clients.append(client)
            threading.Thread(target=self._read, args=(client, lines), daemon=True).start()

    def _read(self, client: socket.socket, lines: list[tuple[float, dict]]) -> None:
        with client.makefile("rb") as reader:
            try:
                for raw in reader:
                    assert raw.endswith(b"\n")
                    lines.append((time.monotonic(), json.loads(raw)))
            except (OSError, ValueError):
                return

    def stop(self) -> None:
        """The server goes away: listener and connections closed, the socket file removed."""
        assert self._listener is not None
        self._listener.close()
        with self._lock:
            for client in self._clients:
                client.shutdown(socket.SHUT_RDWR)
                client.close()
            self._clients.clear()
        self.path.unlink()

    def wait_for(self, condition, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.connections}"
            time.sleep(0.01)

    def messages(self, connection: int) -> list[dict]:
        with self._lock:
            lines = self.connections[connection] if connection < len(self.connections) else []
        return [m for _, m in lines]


def spawn(binary: str, payload: dict, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with tempfile.TemporaryFile() as stdin:  # PAY-1: the whole payload before the start
        stdin.write(json.dumps(payload).encode() + b"\n")
        stdin.seek(0)
        return subprocess.Popen(
            [binary],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": os.environ["PATH"], **env},
        )


def original_env(payload: dict) -> dict[str, str]:
    # What the original server sets (ENV-1); it has no EXTJOB_* variables.
    return {
        "DONKEYLABS_JOB_ID": payload["jobId"],
        "DONKEYLABS_JOB_NAME": payload["name"],
        "DONKEYLABS_SOCKET_PATH": payload["socketPath"],
    }


def test_neg_3_the_original_payload_gets_a_v1_worker_that_never_waits(fixture_binary, tmp_path):
    server = SilentServer(Path(tempfile.mkdtemp(prefix="xjv1", dir="/tmp")) / "job.sock")
    payload = {
        "jobId": "job_1_1732492800000",
        "name": "rust-v1",
        "data": {"scenario": "sleep", "ms": 7000},
        "socketPath": str(server.path),
    }
    worker = spawn(fixture_binary, payload, original_env(payload))
    server.wait_for(lambda: worker.poll() is not None, "the worker to exit")
    exited = time.monotonic()
    stdout, stderr = worker.communicate()
    assert worker.returncode == 0, stderr
    assert stdout == b""  # FIX-3, WRAP-5
    [lines] = server.connections
    kinds = [m["type"] for _, m in lines]
    assert kinds[0] == "started" and kinds[-1] == "completed", kinds
    assert "heartbeat" in kinds  # HB-2: every 5000 ms when the payload names no interval
    assert lines[-1][1]["result"] == {"slept": 7000}
    assert not any("seq" in m or m["type"] == "hello" for _, m in lines)  # NEG-3
    assert all(m["jobId"] == payload["jobId"] for _, m in lines)
    # EXIT-3 with a v1 server: within 1000 ms of the write (+ a margin for a
    # loaded machine; the real tail is measured in bench/wrapper_throughput.py).
    assert exited - lines[-1][0] < 3.0


def test_life_3_a_v1_worker_reconnects_after_a_restart_and_says_started_again(
    fixture_binary, tmp_path
):
    server = SilentServer(Path(tempfile.mkdtemp(prefix="xjv1", dir="/tmp")) / "job.sock")
    payload = {
        "jobId": "job_2",
        "name": "rust-v1",
        "data": {"scenario": "logs", "count": 60, "intervalMs": 20},
        "socketPath": str(server.path),
        "heartbeatIntervalMs": 200,
    }
    worker = spawn(fixture_binary, payload, original_env(payload))
    server.wait_for(lambda: len(server.messages(0)) > 5, "logs to flow")
    server.stop()
    time.sleep(0.4)  # the fault itself: the server is away
    server.listen()
    server.wait_for(lambda: worker.poll() is not None, "the worker to exit")
    _, stderr = worker.communicate()
    assert worker.returncode == 0, stderr
    second = server.messages(len(server.connections) - 1)
    assert second[0]["type"] == "started", second[:3]  # LIFE-3, RECONNECT-4
    assert second[-1] == {**second[-1], "type": "completed", "result": {"count": 60}}
    logged = [
        m["data"]["i"]
        for c in range(len(server.connections))
        for m in server.messages(c)
        if m["type"] == "log"
    ]
    assert (
        logged == sorted(logged) and logged[-1] == 60
    )  # in order; v1 may lose what the dead socket held
    stamps = [m["timestamp"] for m in second]
    assert stamps == sorted(stamps)  # TIME-1

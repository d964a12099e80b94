"""A real socket peer that plays the server side for the bash wrapper's tests.

`Peer` listens on a Unix socket in a temp dir or on TCP 127.0.0.1 (port 0),
records every line a worker sends, and can answer like an extended server
(welcome, acks, cancel), stay silent like the original (v1), withhold acks,
drop connections, go away and come back on the same address.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WRAPPER = HERE.parent / "extjob.sh"
FIXTURE = HERE.parent / "fixture_worker.sh"
REPO = HERE.parents[2]
ALL_FEATURES = ["auth", "replay", "control", "spool", "checkpoint"]
TOKEN = "t0k3n-0123456789abcdef"


@dataclass
class Line:
    """One line received from the worker."""

    conn: int
    raw: bytes
    at: float  # monotonic receipt time
    msg: dict[str, Any] | None = field(default=None)


class Peer:
    """The server side of one job, on a real socket."""

    def __init__(self, address: str, job_id: str = "j_1", ext: bool = True) -> None:
        self.address = address  # a Unix socket path or tcp://127.0.0.1:PORT
        self.job_id = job_id
        self.ext = ext  # answer hello with welcome and ack sequenced messages
        self.ack = True
        self.lines: list[Line] = []
        self.recorded_seq = 0  # highest seq recorded (what welcome's lastSeq says)
        self.hello_reply: dict[str, Any] | None = None  # replaces the welcome
        self.heartbeat_ms = 10000  # what welcome says
        self.reading = threading.Event()  # clear it to stop reading (a slow server)
        self.reading.set()
        self._lock = threading.Condition()
        self._conns: list[socket.socket] = []
        self._conn_count = 0
        self._listener: socket.socket | None = None
        self.start()

    # -- lifecycle
    def start(self) -> None:
        if self.address.startswith("tcp://"):
            host, port = self.address[6:].rsplit(":", 1)
            family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host.strip("[]"), int(port)))
            self.address = f"tcp://{host}:{sock.getsockname()[1]}"
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(self.address)
        sock.listen(16)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def stop(self) -> None:
        """Go away: stop listening and close every connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
            if not self.address.startswith("tcp://"):
                os.unlink(self.address)
        self.drop()

    def drop(self) -> None:
        """Close every open connection (the worker sees EOF)."""
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    # -- I/O
    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conn_count += 1
                self._conns.append(conn)
                index = self._conn_count
            threading.Thread(target=self._read, args=(conn, index), daemon=True).start()

    def _read(self, conn: socket.socket, index: int) -> None:
        buf = b""
        while True:
            self.reading.wait()
            try:
                chunk = conn.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                if buf:
                    self._record(conn, index, buf)
                return
            buf += chunk
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                self._record(conn, index, raw)

    def _record(self, conn: socket.socket, index: int, raw: bytes) -> None:
        line = Line(index, raw, time.monotonic())
        with contextlib.suppress(UnicodeDecodeError, ValueError):
            line.msg = json.loads(raw.decode("utf-8"))
        msg = line.msg
        with self._lock:
            self.lines.append(line)
            self._lock.notify_all()
        if not isinstance(msg, dict) or not self.ext:
            return
        if msg.get("type") == "hello":
            reply = self.hello_reply or {
                "type": "welcome",
                "protocolVersion": 1,
                "features": msg.get("features", []),
                "lastSeq": self.recorded_seq,
                "heartbeatIntervalMs": self.heartbeat_ms,
            }
            self.send(reply, conn)
        elif isinstance(msg.get("seq"), int) and self.ack:
            self.recorded_seq = max(self.recorded_seq, msg["seq"])
            self.send({"type": "ack", "seq": self.recorded_seq}, conn)

    def send(self, msg: dict[str, Any] | bytes, conn: socket.socket | None = None) -> None:
        """Send a server message (a dict gets jobId and timestamp) or raw bytes."""
        if isinstance(msg, dict):
            msg = {"jobId": self.job_id, "timestamp": int(time.time() * 1000), **msg}
            data = json.dumps(msg).encode() + b"\n"
        else:
            data = msg
        with self._lock:
            targets = [conn] if conn is not None else self._conns[-1:]
        for target in targets:
            with contextlib.suppress(OSError):
                target.sendall(data)

    # -- inspection
    def messages(self, type_: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            msgs = [line.msg for line in self.lines if isinstance(line.msg, dict)]
        return [m for m in msgs if type_ is None or m.get("type") == type_]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; received {self.describe()}")
                self._lock.wait(min(left, 0.05))

    def wait_type(self, type_: str, count: int = 1, timeout: float = 10.0) -> None:
        self.wait_for(lambda: len(self.messages(type_)) >= count, timeout)

    def describe(self) -> str:
        return "\n".join(f"#{line.conn} {line.raw[:200]!r}" for line in self.lines)


def payload(peer: Peer, data: Any = None, ext: bool = True, **extra: Any) -> dict[str, Any]:
    """A payload for `peer`: v1, or extended with every feature offered."""
    body: dict[str, Any] = {
        "jobId": peer.job_id,
        "name": "test-job",
        "data": {} if data is None else data,
        "socketPath": peer.address,
    }
    if ext:
        body.update(
            protocolVersion=1,
            features=ALL_FEATURES,
            heartbeatIntervalMs=10000,
            heartbeatTimeoutMs=30000,
            reconnectWindowMs=60000,
            maxLineBytes=16777216,
            token=TOKEN,
            attempt=1,
            maxAttempts=3,
        )
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


class Worker:
    """A bash worker process with its payload on stdin."""

    def __init__(
        self,
        script: str | Path,
        stdin: bytes | dict[str, Any],
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("EXTJOB_", "DONKEYLABS_"))}
        base.update(env or {})
        data = stdin if isinstance(stdin, bytes) else json.dumps(stdin).encode() + b"\n"
        self.proc = subprocess.Popen(
            ["bash", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=base,
            cwd=cwd,
            start_new_session=True,  # own process group, as SRV-8 spawns it
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.close()
        self.proc.stdin = None  # communicate() must not flush it again
        self.stdout = b""
        self.stderr = b""

    def wait(self, timeout: float = 20.0) -> int:
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.proc.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate()

    def group_gone(self, timeout: float = 5.0) -> bool:
        """Waits until no process of the worker's group is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.02)
        return False

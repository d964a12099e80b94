"""A real socket peer that plays the server side for the bash wrapper's tests.

`Peer` listens on a Unix socket in a temp dir or on TCP 127.0.0.1 (port 0),
records every line a worker sends, and can answer like an extended server
(welcome, acks, cancel), stay silent like the original (v1), withhold acks,
drop connections, go away and come back on the same address. What it
answers is decided by the protocol core's ``ServerAttempt``, as in the
reference server; the knobs only withhold or replace it.
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

from extjob.protocol import ServerAttempt, ServerConnection

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
        self._job_id = job_id
        self._token = TOKEN
        self.ext = ext  # answer hello with welcome and ack sequenced messages
        self.ack = True  # False: what arrives is neither recorded nor acknowledged
        self.lines: list[Line] = []
        self.hello_reply: dict[str, Any] | None = None  # replaces the welcome
        self._heartbeat_ms = 10000  # what welcome says
        self.attempt = self._attempt(0)
        self.reading = threading.Event()  # clear it to stop reading (a slow server)
        self.reading.set()
        self._lock = threading.Condition()
        self._conns: list[socket.socket] = []
        self._conn_count = 0
        self._listener: socket.socket | None = None
        self.start()

    def _attempt(self, recorded_seq: int) -> ServerAttempt:
        return ServerAttempt(
            self._job_id,
            self._token,
            now=time.monotonic(),
            heartbeat_timeout_ms=3 * self._heartbeat_ms,  # HB-1: the interval is a third
            recorded_seq=recorded_seq,
        )

    @property
    def recorded_seq(self) -> int:
        """The highest seq recorded: what the welcome's lastSeq says."""
        return self.attempt.recorded_seq

    @recorded_seq.setter
    def recorded_seq(self, seq: int) -> None:
        """As if the server had stored up to ``seq`` (for the next connections)."""
        with self._lock:
            self.attempt = self._attempt(seq)

    @property
    def job_id(self) -> str:
        return self._job_id

    @job_id.setter
    def job_id(self, job_id: str) -> None:
        """Serve another job (its payload's jobId) from the next connection on."""
        with self._lock:
            self._job_id = job_id
            self.attempt = self._attempt(self.attempt.recorded_seq)

    @property
    def token(self) -> str:
        return self._token

    @token.setter
    def token(self, token: str) -> None:
        """Accept another attempt token (its payload's) from the next connection on."""
        with self._lock:
            self._token = token
            self.attempt = self._attempt(self.attempt.recorded_seq)

    @property
    def heartbeat_ms(self) -> int:
        return self._heartbeat_ms

    @heartbeat_ms.setter
    def heartbeat_ms(self, interval: int) -> None:
        with self._lock:
            self._heartbeat_ms = interval
            self.attempt = self._attempt(self.attempt.recorded_seq)

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
                core = self.attempt.connect(trace=True)
            threading.Thread(target=self._read, args=(conn, index, core), daemon=True).start()

    def _read(self, conn: socket.socket, index: int, core: ServerConnection) -> None:
        while True:
            self.reading.wait()
            try:
                chunk = conn.recv(1 << 20)
            except OSError:
                chunk = b""
            if not chunk:
                with self._lock:
                    core.connection_lost()
                    if core.pending:  # a last line without its newline: kept, for the tests
                        self.lines.append(Line(index, b"<cut>", time.monotonic()))
                        self._lock.notify_all()
                return
            with self._lock:
                out = self._receive(core, index, chunk)
            if out:
                self.send(out, conn)

    def _receive(self, core: ServerConnection, index: int, chunk: bytes) -> bytes:
        """Feed the core, record every line; the bytes owed, less the faults'."""
        intake = core.receive_data(chunk, time.monotonic())
        now = time.monotonic()
        for raw, message, _error in intake.trace:
            line = Line(index, raw if isinstance(raw, bytes) else b"<too long>", now)
            line.msg = dict(message.body) if message is not None else None
            self.lines.append(line)
        self._lock.notify_all()
        if self.ack:
            core.attempt.recorded(intake)
        else:
            core.attempt.not_recorded(intake)  # as if lost: the worker must replay
        owed = core.data_to_send()
        if not self.ext:
            return b""  # a v1 server never writes (NEG-3)
        if intake.hello is not None and self.hello_reply is not None:
            _welcome, _, rest = owed.partition(b"\n")
            reply = {"jobId": self.job_id, "timestamp": int(time.time() * 1000), **self.hello_reply}
            owed = json.dumps(reply).encode() + b"\n" + rest
        return owed

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

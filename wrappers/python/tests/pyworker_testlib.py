"""Test helpers for the Python wrapper: a real socket peer that plays the server, and workers.

A module of its own (not conftest) because pytest runs with --import-mode=importlib;
conftest.py puts this directory on sys.path."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from extjob.conformance.ports import relistenable_port
from extjob.protocol import ServerAttempt, ServerConnection

WRAPPER_DIR = Path(__file__).resolve().parents[1]
REPO = WRAPPER_DIR.parents[1]
VECTORS = REPO / "schema" / "vectors"
FIXTURE = WRAPPER_DIR / "fixture_worker.py"
TOKEN = "t0k3n-0123456789abcdef"
ALL_FEATURES = ["auth", "replay", "control", "spool", "checkpoint"]
DEADLINE = 10.0  # seconds: generous, every wait ends as soon as its condition holds

sys.path.insert(0, str(WRAPPER_DIR))


def load_vectors(name: str) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = json.loads((VECTORS / name).read_text())["tests"]
    return tests


class Received:
    """One line the peer read: which connection, when (monotonic), the raw bytes, the object."""

    def __init__(self, conn: int, at: float, raw: bytes) -> None:
        self.conn = conn
        self.at = at
        self.raw = raw
        try:
            self.message: Any = json.loads(raw)
        except ValueError:
            self.message = None

    @property
    def type(self) -> str | None:
        return self.message.get("type") if isinstance(self.message, dict) else None


class Peer:
    """The server side of the protocol on a real Unix or TCP socket.

    What it answers is decided by the protocol core (``ServerAttempt``), like
    the reference server's: ``extended`` peers answer ``hello`` with
    ``welcome`` and acknowledge what they recorded, each ``seq`` once
    (REPLAY-5). A v1 peer never writes (like the original). Faults:
    ``ack_if`` (a message it refuses is not recorded: the whole read is
    lost, as by a failed store), ``send_acks`` (recorded, acks lost),
    ``welcome_delay``, ``cut_partial_at``. The peer can go away (``stop``)
    and come back at the same address (``start``), keeping what it recorded.
    """

    def __init__(self, tmp: Path, *, tcp: bool = False, extended: bool = False) -> None:
        self.extended = extended
        self.tcp = tcp
        self.path = str(tmp / "job.sock")
        self.port = relistenable_port()  # the same port again after stop()
        self.heartbeat_interval_ms = 50  # HB-1: a third of the timeout the core is given
        self.welcome_delay = 0.0  # seconds before the welcome is sent (the peer keeps reading)
        self.welcomed_at: list[float] = []
        self.send_acks = True  # False: record messages but lose the acks
        self.cut_partial_at: int | None = None  # drop the connection mid-line, once
        self.ack_if: Callable[[dict[str, Any]], bool] = lambda message: True
        self.cond = threading.Condition()
        self.received: list[Received] = []
        self.recorded: list[dict[str, Any]] = []  # what the core let through, each seq once
        self.connections: list[socket.socket] = []
        self.closed: set[int] = set()  # connections that reached end of file
        self.attempt = self._attempt()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self.start()

    def _attempt(self) -> ServerAttempt:
        return ServerAttempt(
            "j_1", TOKEN, now=time.monotonic(), heartbeat_timeout_ms=3 * self.heartbeat_interval_ms
        )

    @property
    def last_seq(self) -> int:
        return self.attempt.recorded_seq

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}" if self.tcp else self.path

    def start(self) -> None:
        if self.tcp:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            self.port = listener.getsockname()[1]
        else:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(self.path)
        listener.listen(16)
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        """Go away: close the listener and every connection; nothing answers any more."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        if not self.tcp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.drop()

    def drop(self) -> None:
        """Close the open connections but keep listening."""
        with self.cond:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self.stop()
        for thread in self._threads:
            thread.join(2)

    def send(self, message: dict[str, Any], conn: int = -1) -> None:
        """Write one server line on a connection (the latest by default)."""
        self.send_raw(json.dumps(message).encode() + b"\n", conn)

    def send_raw(self, data: bytes, conn: int = -1) -> None:
        with self.cond:
            target = self.connections[conn]
        with contextlib.suppress(OSError):
            target.sendall(data)

    def server_message(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, "jobId": "j_1", "timestamp": int(time.time() * 1000), **fields}

    def new_attempt(self) -> None:
        """Forget the previous attempt: its lines, and the seq it recorded (REPLAY-5)."""
        with self.cond:
            self.received.clear()
            self.recorded.clear()
            self.welcomed_at.clear()
            self.attempt = self._attempt()

    # ---- what arrived

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [r.message for r in self.received if kind is None or r.type == kind]

    def types(self) -> list[str | None]:
        with self.cond:
            return [r.type for r in self.received]

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
        with self.cond:
            if not self.cond.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what}; received {self.types()}")

    def wait_type(self, kind: str, count: int = 1) -> None:
        self.wait_for(lambda: self.types().count(kind) >= count, f"{count} x {kind}")

    # ---- internals

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self.cond:
                self.connections.append(conn)
                index = len(self.connections) - 1
                core = self.attempt.connect(trace=True)
            self._spawn(self._serve, conn, index, core)

    def _serve(self, conn: socket.socket, index: int, core: ServerConnection) -> None:
        held: list[bytes] | None = None  # what must follow a delayed welcome
        while True:
            try:
                data = conn.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                with self.cond:
                    core.connection_lost()
                    self.closed.add(index)
                    self.cond.notify_all()
                return
            with self.cond:
                out = self._receive(core, index, data)
            for line in out:
                if held is not None:
                    held.append(line)
                elif line.startswith(b'{"type":"welcome"') and self.welcome_delay:
                    held = []
                    time.sleep(self.welcome_delay)  # this connection's reader waits too
                    self._welcome(conn, line)
                    for each in held:
                        with contextlib.suppress(OSError):
                            conn.sendall(each)
                    held = None
                elif line.startswith(b'{"type":"welcome"'):
                    self._welcome(conn, line)
                else:
                    with contextlib.suppress(OSError):
                        conn.sendall(line)
            if self.cut_partial_at is not None and core.pending > self.cut_partial_at:
                self.cut_partial_at = None
                self.drop()

    def _receive(self, core: ServerConnection, index: int, data: bytes) -> list[bytes]:
        """Feed the core; record; return the lines owed (less the faults')."""
        intake = core.receive_data(data, time.monotonic())
        now = time.monotonic()
        for line, _message, _error in intake.trace:
            self.received.append(Received(index, now, line if isinstance(line, bytes) else b""))
        attempt = core.attempt
        if all(self.ack_if(dict(m.body)) for m in intake.messages):
            attempt.recorded(intake)
            self.recorded += [dict(m.body) for m in intake.messages]
        else:
            attempt.not_recorded(intake)  # lost, as by a failed store: the worker replays
        self.cond.notify_all()
        if not self.extended:
            core.data_to_send()
            return []  # a v1 server never writes (NEG-3)
        lines = core.data_to_send().splitlines(keepends=True)
        return [raw for raw in lines if self.send_acks or not raw.startswith(b'{"type":"ack"')]

    def _welcome(self, conn: socket.socket, welcome: bytes) -> None:
        with self.cond:
            self.welcomed_at.append(time.monotonic())
        with contextlib.suppress(OSError):
            conn.sendall(welcome)


def v1_payload(peer: Peer, data: Any, **extra: Any) -> dict[str, Any]:
    return {"jobId": "j_1", "name": "fixture", "data": data, "socketPath": peer.address, **extra}


def ext_payload(peer: Peer, data: Any, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        **v1_payload(peer, data),
        "protocolVersion": 1,
        "features": ALL_FEATURES,
        "heartbeatIntervalMs": 50,
        "heartbeatTimeoutMs": 150,
        "reconnectWindowMs": 5000,
        "maxLineBytes": 16777216,
        "token": TOKEN,
        "attempt": 1,
        "maxAttempts": 3,
        "spoolPath": str(tmp / "j_1.1.ndjson"),
        **extra,
    }


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any job variables (ENV-1), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXTJOB_", "DONKEYLABS_"))}
    return {**env, **extra}


class Worker:
    """A worker process: the fixture worker, or a script using the wrapper's API."""

    def __init__(self, payload: Any, script: str | None = None, env: dict[str, str] | None = None):
        args = [sys.executable, str(FIXTURE)]
        if script is not None:
            args = [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(WRAPPER_DIR)!r})\n" + script,
            ]
        stdin = payload if isinstance(payload, bytes) else json.dumps(payload).encode() + b"\n"
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_environment() if env is None else env,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(stdin)
        self.proc.stdin.close()
        self.exited_at: float | None = None

    def wait(self, timeout: float = DEADLINE) -> int:
        status = self.proc.wait(timeout)
        if self.exited_at is None:
            self.exited_at = time.monotonic()
        return status

    def output(self) -> tuple[bytes, bytes]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        return self.proc.stdout.read(), self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def check_stream(messages: list[dict[str, Any]]) -> None:
    """The stream rules every wrapper output must meet (STREAM-1, -2, -3, -5, TIME-1)."""
    assert all(isinstance(m, dict) for m in messages), "every line is a JSON object (FRAME-1)"
    assert {m["jobId"] for m in messages} == {"j_1"}, "STREAM-1"
    first = next(m for m in messages if m["type"] != "hello")
    assert first["type"] == "started", f"STREAM-2: first message is {first['type']}"
    unsequenced = [m["timestamp"] for m in messages if "seq" not in m]
    assert unsequenced == sorted(unsequenced), "STREAM-5: unsequenced timestamps decrease"
    sequenced = sorted((m for m in messages if "seq" in m), key=lambda m: m["seq"])
    stamps = [m["timestamp"] for m in sequenced]
    assert stamps == sorted(stamps), "STREAM-5: sequenced timestamps decrease in seq order"
    terminal = [i for i, m in enumerate(messages) if m["type"] in ("completed", "failed")]
    if terminal:
        after = messages[terminal[0] + 1 :]
        assert all(m["type"] == "hello" or "seq" in m for m in after), (
            "STREAM-3: sent after terminal"
        )

"""The harness's side of the wire: a small asyncio server that records.

It plays an extjob server just well enough to drive one worker, and it does
so with the protocol core's own server side (``extjob.protocol.ServerAttempt``),
so that no rule is decided here: binding, hello checks, negotiation, which
seq is new, the welcome, acks and error replies all come from the core. It
listens on a Unix socket or on TCP, records every line in the transcript, and
lets a case inject faults through its knobs: drop the connections, take the
listener away and bring it back at the same address (a server restart),
withhold acks, delay the welcome, stop reading, write any line.

Its durability model is that of a real server: what it has acknowledged is
"on disk"; what it received but did not acknowledge is lost by a restart
(the restarted attempt is built from the acknowledged seq, like a server's
from its store). So withholding acks and then restarting makes a correct
worker replay.

A new fault is a knob here (an attribute a drive sets) and, if it changes
what is written, a test in :meth:`FakeServer._may_write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from extjob.protocol import (
    Intake,
    Message,
    Problem,
    RemoteProtocolError,
    ServerAttempt,
    ServerConnection,
    ack,
    decode,
    encode,
)

from .ports import relistenable_port
from .transcript import Transcript


class Connection:
    """One accepted connection and what the worker negotiated on it."""

    def __init__(self, number: int, writer: asyncio.StreamWriter, core: ServerConnection):
        self.number = number
        self.writer = writer
        self.core = core
        self.hello: Message | None = None
        self.features: tuple[str, ...] = ()
        self.welcomed_at: float | None = None  #: transcript time of our welcome
        self.open = True
        #: Lines held back while the welcome is delayed (they must follow it).
        self.held: list[bytes] | None = None


class FakeServer:
    """Accepts the worker's connections and records every line in a transcript."""

    def __init__(
        self,
        transcript: Transcript,
        job_id: str,
        token: str,
        *,
        offered: tuple[str, ...],
        heartbeat_timeout_ms: int,
        max_line_bytes: int,
    ):
        self.transcript = transcript
        self.job_id = job_id
        self.token = token
        self.offered = offered
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.max_line_bytes = max_line_bytes
        self.connections: list[Connection] = []
        #: Knobs a case turns to inject faults.
        self.acking = True
        self.ack_terminal = True
        self.welcome_delay_s = 0.0
        self.unwelcomed: set[int] = set()  #: connections whose hello gets no reply (AUTH-2)
        self.welcome_bytes = 0  #: pad the welcome line to this many bytes, less \n (LIMIT-3)
        self.refuse = False  #: every hello is refused with an auth error (AUTH-4)
        self.hang_up = False  #: close every new connection at once (RECONNECT-1)
        self.terminal_ack_delay_s = 0.0  #: a slow, still timely, terminal ack (REPLAY-3)
        self.newline = b"\n"  #: b"\r\n" for a server that ends its lines so (FRAME-1)
        #: Stop reading once a welcome is written: nothing after it is recorded or acked.
        self.deaf_after_welcome = False
        #: The highest seq acknowledged: what survives a restart.
        self.acked_seq = 0
        self.reading = asyncio.Event()
        self.reading.set()
        self.changed = asyncio.Condition()
        self.attempt = self._attempt(adopted=False)
        self._listener: asyncio.Server | None = None
        self._path: str | None = None
        self._port = 0

    @property
    def recorded_seq(self) -> int:
        """The highest seq received ("on disk" at once; its ack may be withheld)."""
        return self.attempt.recorded_seq

    def ack_up_to(self, conn: Connection, seq: int) -> None:
        """Acknowledge everything up to ``seq`` now (REPLAY-2: acks are cumulative)."""
        self.send(conn, ack(self.job_id, seq))

    def _attempt(self, *, adopted: bool, token: str | None = None) -> ServerAttempt:
        return ServerAttempt(
            self.job_id,
            token or self.token,
            now=time.monotonic(),  # the default event loop's clock too
            offered=self.offered,
            heartbeat_timeout_ms=self.heartbeat_timeout_ms,
            max_line_bytes=self.max_line_bytes,
            recorded_seq=self.acked_seq,
            adopted=adopted,
        )

    # -- the listener ------------------------------------------------------

    async def listen_unix(self, path: str) -> None:
        self._path = path
        self._listener = await asyncio.start_unix_server(self._serve, path, limit=2**16)
        os.chmod(path, 0o600)  # TRANS-2
        self.transcript.event(f"listening on {path}")

    async def listen_tcp(self) -> None:
        """Listen on loopback (TRANS-2); again on the same port after a restart."""
        self._port = self._port or relistenable_port()
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", self._port)
        self._port = self._listener.sockets[0].getsockname()[1]
        self.transcript.event(f"listening on tcp://127.0.0.1:{self._port}")

    @property
    def address(self) -> str:
        """The payload's ``socketPath`` (TRANS-1)."""
        return self._path if self._path else f"tcp://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    async def stop(self, why: str = "listener closed") -> None:
        """Close the listener and every connection, and remove the socket file."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self.drop_connections(why)
        if self._path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
        self.transcript.event(why)
        await self.notify()

    async def restart(self) -> None:
        """Listen again at the same address; unacknowledged messages were lost."""
        self.attempt = self._attempt(adopted=True)
        if self._path:
            await self.listen_unix(self._path)
        else:
            await self.listen_tcp()

    def collect_spool(self, data: bytes) -> bool:
        """Whether a restarted server would take this spool file (SPOOL-3): its
        hello passes AUTH-4 with spool in force, as the core decides."""
        return self._attempt(adopted=True).apply_spool(data, 0.0) is not None

    def drop_connections(self, why: str = "connection dropped by the harness") -> None:
        for conn in self.connections:
            if conn.open:
                self._closed(conn)
                conn.writer.close()
                self.transcript.event(why, conn.number)
        self.reading.set()

    def _closed(self, conn: Connection) -> None:
        conn.open = False
        conn.core.connection_lost()

    # -- waiting -------------------------------------------------------------

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``predicate()`` holds; False if ``timeout_s`` passed first."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(predicate), timeout_s)
            except TimeoutError:
                return False
        return True

    # -- writing -------------------------------------------------------------

    def current(self) -> Connection | None:
        """The newest open connection."""
        return next((c for c in reversed(self.connections) if c.open), None)

    def send(self, conn: Connection, obj: Mapping[str, Any]) -> bool:
        """Write one server line (only to a peer that sent hello, NEG-3);
        False if the connection is gone."""
        if not conn.open or conn.writer.is_closing():
            return False
        conn.core.send(obj)
        self._flush(conn)
        return True

    async def send_raw(self, conn: Connection, line: bytes, timeout_s: float) -> bool:
        """Write bytes as they are (a fault) and wait until the worker has taken them."""
        if not conn.open:
            return False
        conn.writer.write(line)
        self._sent(conn, line)
        try:
            await asyncio.wait_for(conn.writer.drain(), timeout_s)
        except (TimeoutError, ConnectionError):
            return False
        return True

    def _flush(self, conn: Connection, terminal: bool = False) -> None:
        """Write what the core owes the worker, less what a fault withholds."""
        for line in conn.core.data_to_send().splitlines(keepends=True):
            message = self._decoded(line)
            if not self._may_write(message, terminal):
                continue
            if message is not None and message.type == "welcome":
                if conn.number in self.unwelcomed:
                    self.transcript.event("hello left unanswered by the harness", conn.number)
                    continue
                line = self._padded(line)
                if self.deaf_after_welcome:
                    self.reading.clear()
                    note = "the harness stops reading after its welcome"
                    self.transcript.event(note, conn.number)
            late = terminal and self.terminal_ack_delay_s
            if late and message is not None and message.type == "ack":
                loop = asyncio.get_running_loop()
                loop.call_later(self.terminal_ack_delay_s, self._write, conn, line, message)
                continue
            if message is not None and message.type == "welcome" and self.welcome_delay_s:
                conn.held = []
                asyncio.get_running_loop().create_task(self._welcome_later(conn, line))
            elif conn.held is not None:
                conn.held.append(line)
            else:
                self._write(conn, line, message)

    def _padded(self, line: bytes) -> bytes:
        """The welcome with an unknown field (MSG-2) that makes it ``welcome_bytes`` long."""
        if not self.welcome_bytes:
            return line
        reply = {**orjson.loads(line), "x-padding": ""}
        reply["x-padding"] = "p" * (self.welcome_bytes - len(encode(reply)) + 1)
        return encode(reply)

    def _may_write(self, message: Message | None, terminal: bool) -> bool:
        if message is not None and message.type == "ack":
            return self.acking and (self.ack_terminal or not terminal)
        return True

    def _write(self, conn: Connection, line: bytes, message: Message | None) -> None:
        if not conn.open or conn.writer.is_closing():
            return
        if self.newline != b"\n":
            line = line[:-1] + self.newline
        conn.writer.write(line)
        self._sent(conn, line, message)
        if message is None:
            return
        if message.type == "welcome":
            conn.welcomed_at = self.transcript.now()
        elif message.type == "ack":
            self.acked_seq = max(self.acked_seq, message.body["seq"])

    async def _welcome_later(self, conn: Connection, line: bytes) -> None:
        # A deliberate pause, not a guess at timing: AUTH-2 says the worker
        # waits for welcome, so nothing it sends may arrive before it.
        await asyncio.sleep(self.welcome_delay_s)
        held, conn.held = conn.held or [], None
        for each in [line, *held]:
            self._write(conn, each, self._decoded(each))
        await self.notify()

    def _decoded(self, line: bytes) -> Message | None:
        try:
            return decode(line.rstrip(b"\n"), "server")
        except RemoteProtocolError:  # a deliberately unknown type
            return None

    def _sent(self, conn: Connection, line: bytes, message: Message | None = None) -> None:
        self.transcript.add(
            "server",
            conn.number,
            line.decode(errors="replace").rstrip("\n"),
            message=message if message is not None else self._decoded(line),
        )

    # -- reading -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        attempt = self.attempt
        if self.refuse:  # a token the worker cannot have: the core refuses it (AUTH-4)
            attempt = self._attempt(adopted=False, token=f"refused-{self.token}")
        core = attempt.connect(trace=True)
        conn = Connection(len(self.connections) + 1, writer, core)
        self.connections.append(conn)
        self.transcript.event("connected", conn.number)
        await self.notify()
        if self.hang_up:
            self._closed(conn)
            writer.close()
            self.transcript.event("hung up by the harness", conn.number)
            await self.notify()
            return
        try:
            while conn.open:
                await self.reading.wait()
                data = await reader.read(65536)
                if not data:
                    break
                self._receive(conn, core.receive_data(data, asyncio.get_running_loop().time()))
                await self.notify()
            cut = core.close_input()
            if conn.open and cut is not None:
                problem = Problem(cut.requirement, None, cut.detail)
                self.transcript.add("worker", conn.number, cut.detail, problem=problem)
        except (ConnectionError, OSError) as exc:
            self.transcript.event(f"read error: {exc}", conn.number)
        finally:
            if conn.open:
                self._closed(conn)
                self.transcript.event("closed by the worker", conn.number)
            writer.close()
            await self.notify()

    def _receive(self, conn: Connection, intake: Intake) -> None:
        for line, message, exc in intake.trace:
            if isinstance(line, bytes):
                text = line.decode("utf-8", errors="replace")
            else:
                text = f"<{line.size} bytes>"
            problem = None if exc is None else Problem(exc.requirement, exc.field, exc.detail)
            self.transcript.add("worker", conn.number, text, message=message, problem=problem)
        if intake.hello is not None:
            conn.hello = intake.hello
            conn.features = conn.core.features
        self.attempt.recorded(intake)  # "on disk" at once; the ack may be withheld
        self._flush(conn, terminal=intake.terminal is not None)
        if intake.refused is not None:
            self.transcript.event(f"refused: {intake.refused}", conn.number)
            self._closed(conn)
            conn.writer.close()

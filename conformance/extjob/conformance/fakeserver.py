"""The harness's side of the wire: a small asyncio server that records.

It plays an extjob server just well enough to drive one worker. It listens on
a Unix socket or on TCP, decodes every line with the protocol core (so no
schema rule is restated here), answers ``hello`` with ``welcome`` and
sequenced messages with ``ack``, and lets a case inject faults: drop the
connections, take the listener away and bring it back at the same address (a
server restart), withhold acks, stop reading, write any line.

Its durability model is that of a real server: what it has acknowledged is
"on disk"; what it received but did not acknowledge is lost by a restart. So
withholding acks and then restarting makes a correct worker replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from extjob.protocol import (
    LineBuffer,
    Message,
    OversizedLine,
    Problem,
    RemoteProtocolError,
    ack,
    decode,
    encode,
    welcome,
)

from .transcript import Transcript


class Connection:
    """One accepted connection and what the worker negotiated on it."""

    def __init__(self, number: int, writer: asyncio.StreamWriter):
        self.number = number
        self.writer = writer
        self.hello: Message | None = None
        self.features: tuple[str, ...] = ()
        self.welcomed_at: float | None = None  #: transcript time of our welcome
        self.open = True


class FakeServer:
    """Accepts the worker's connections and records every line in a transcript."""

    def __init__(
        self,
        transcript: Transcript,
        job_id: str,
        *,
        offered: tuple[str, ...],
        heartbeat_interval_ms: int,
        max_line_bytes: int,
    ):
        self.transcript = transcript
        self.job_id = job_id
        self.offered = offered
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_line_bytes = max_line_bytes
        self.connections: list[Connection] = []
        #: Knobs a case turns to inject faults.
        self.acking = True
        self.ack_terminal = True
        self.welcome_delay_s = 0.0
        #: REPLAY-5 bookkeeping: highest seq received, highest acknowledged.
        self.recorded_seq = 0
        self.acked_seq = 0
        self.reading = asyncio.Event()
        self.reading.set()
        self.changed = asyncio.Condition()
        self._listener: asyncio.Server | None = None
        self._path: str | None = None
        self._port = 0

    # -- the listener ------------------------------------------------------

    async def listen_unix(self, path: str) -> None:
        self._path = path
        self._listener = await asyncio.start_unix_server(self._serve, path, limit=2**16)
        os.chmod(path, 0o600)  # TRANS-2
        self.transcript.event(f"listening on {path}")

    async def listen_tcp(self) -> None:
        """Listen on loopback (TRANS-2); again on the same port after a restart."""
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
        self.recorded_seq = self.acked_seq
        if self._path:
            await self.listen_unix(self._path)
        else:
            await self.listen_tcp()

    def drop_connections(self, why: str = "connection dropped by the harness") -> None:
        for conn in self.connections:
            if conn.open:
                conn.open = False
                conn.writer.close()
                self.transcript.event(why, conn.number)
        self.reading.set()

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
        """Queue one server line; False if the connection is gone."""
        if not conn.open or conn.writer.is_closing():
            return False
        line = encode(obj)
        conn.writer.write(line)
        self._sent(conn, line)
        return True

    def _sent(self, conn: Connection, line: bytes) -> None:
        try:
            message: Message | None = decode(line, "server")
        except RemoteProtocolError:  # a deliberately unknown type
            message = None
        self.transcript.add(
            "server", conn.number, line.decode(errors="replace").rstrip("\n"), message=message
        )

    async def send_raw(self, conn: Connection, line: bytes, timeout_s: float) -> bool:
        """Write bytes and wait until the worker has taken them (CTRL-6)."""
        if not conn.open:
            return False
        conn.writer.write(line)
        self._sent(conn, line)
        try:
            await asyncio.wait_for(conn.writer.drain(), timeout_s)
        except (TimeoutError, ConnectionError):
            return False
        return True

    # -- reading -------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(len(self.connections) + 1, writer)
        self.connections.append(conn)
        self.transcript.event("connected", conn.number)
        await self.notify()
        lines = LineBuffer(self.max_line_bytes)
        try:
            while conn.open:
                await self.reading.wait()
                data = await reader.read(65536)
                if not data:
                    break
                for line in lines.feed(data):
                    await self._receive(conn, line)
            if conn.open and lines.pending:
                self._invalid(
                    conn,
                    f"{lines.pending} bytes",
                    Problem(
                        "FRAME-1", None, "the connection ended in the middle of a line (no \\n)"
                    ),
                )
        except (ConnectionError, OSError) as exc:
            self.transcript.event(f"read error: {exc}", conn.number)
        finally:
            if conn.open:
                conn.open = False
                self.transcript.event("closed by the worker", conn.number)
            writer.close()
            await self.notify()

    def _invalid(self, conn: Connection, text: str, problem: Problem) -> None:
        self.transcript.add("worker", conn.number, text, problem=problem)

    async def _receive(self, conn: Connection, line: bytes | OversizedLine) -> None:
        if isinstance(line, OversizedLine):
            self._invalid(
                conn,
                f"<{line.size} bytes>",
                Problem("LIMIT-1", None, f"line of {line.size} bytes exceeds maxLineBytes"),
            )
        elif line.strip():  # FRAME-3: blank lines are ignored
            text = line.decode("utf-8", errors="replace")
            try:
                message = decode(line)
            except RemoteProtocolError as exc:
                self._invalid(conn, text, Problem(exc.requirement, exc.field, exc.detail))
            else:
                self.transcript.add("worker", conn.number, text, message=message)
                self._respond(conn, message)
        await self.notify()

    def _respond(self, conn: Connection, message: Message) -> None:
        if message.type == "hello" and conn.hello is None:
            conn.hello = message
            claimed = message.body.get("features") or []
            conn.features = tuple(f for f in self.offered if f in claimed)
            asyncio.get_running_loop().create_task(self._welcome(conn))
        elif message.seq is not None and conn.welcomed_at is not None:
            self.recorded_seq = max(self.recorded_seq, message.seq)  # REPLAY-5
            if self.acking and (self.ack_terminal or not message.is_terminal):
                self.acked_seq = self.recorded_seq
                self.send(conn, ack(self.job_id, self.acked_seq))

    async def _welcome(self, conn: Connection) -> None:
        # A deliberate pause, not a guess at timing: AUTH-2 says the worker
        # waits for welcome, so nothing it sends may arrive before it.
        if self.welcome_delay_s:
            await asyncio.sleep(self.welcome_delay_s)
        reply = welcome(
            self.job_id, list(conn.features), self.recorded_seq, self.heartbeat_interval_ms
        )
        if self.send(conn, reply):
            conn.welcomed_at = self.transcript.now()
        await self.notify()

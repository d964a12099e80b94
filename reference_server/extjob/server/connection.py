"""One worker connection: bytes in, messages to its attempt, lines out.

The connection owns the framing (a ``LineBuffer``) and the binding rules
(AUTH-2..4, NEG-2/3); what the messages mean for the job is the attempt's
business (``run.Run``). A whole read is handed over as one batch, so that the
store sees one transaction per read (REPLAY-2).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, Any

from extjob.protocol import (
    FEATURES,
    LineBuffer,
    Message,
    OversizedLine,
    RemoteProtocolError,
    decode,
    encode,
    error,
    welcome,
)

if TYPE_CHECKING:
    from .run import Run

log = logging.getLogger(__name__)

# Informational `error` lines are dropped once this much output is queued for
# a worker that does not read (CTRL-6).
ERROR_BACKLOG = 64 * 1024


class WorkerConnection(asyncio.Protocol):
    def __init__(self, run: Run) -> None:
        self.run = run
        self.buffer = LineBuffer(run.max_line_bytes)
        self.transport: asyncio.Transport | None = None
        self.bound = False
        self.extended = False  # a hello was accepted: we may write (NEG-3)
        self.features: frozenset[str] = frozenset()
        self.closed = asyncio.get_running_loop().create_future()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.run.connections.add(self)

    def data_received(self, data: bytes) -> None:
        messages: list[Message] = []
        for line in self.buffer.feed(data):
            if isinstance(line, OversizedLine):
                self.reject(
                    RemoteProtocolError(
                        "line_too_long", "LIMIT-1", f"line of {line.size} bytes discarded"
                    )
                )
                continue
            if not line.strip():
                continue  # FRAME-3
            try:
                message = decode(line)
            except RemoteProtocolError as exc:
                self.reject(exc)
                continue
            if self.transport is None or self.transport.is_closing():
                return  # AUTH-4 closed us: nothing after the bad hello counts
            if message.type == "hello" or not self.bound:
                self.bind(message)
                if message.type == "hello" or not self.bound:
                    continue
            messages.append(message)
        if messages:
            self.run.wire.received(messages, len(data))
            self.run.receive(self, messages)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.connections.discard(self)
        if self.run.control is self:
            self.run.control = None
        if not self.closed.done():
            self.closed.set_result(None)

    # binding

    def bind(self, message: Message) -> None:
        """Bind on the first valid line (AUTH-3), or refuse it."""
        run = self.run
        if message.job_id != run.job_id:
            detail = f"this socket belongs to job {run.job_id!r}"
            if message.type == "hello":
                self.refuse("AUTH-4", detail, message)
            else:
                self.reject(RemoteProtocolError("wrong_job", "SRV-5", detail, "jobId"))
            return
        if message.type != "hello":
            if run.require_hello:
                self.refuse("AUTH-5", "this server requires hello", message)
                return
            self.bound = True  # a v1 peer (NEG-3): we never write to it
            run.wire.negotiated(())
            run.connected(self)
            return
        if self.bound:
            self.reject(RemoteProtocolError("out_of_order", "AUTH-2", "a second hello"))
            return
        token = message.body["token"]
        if not secrets.compare_digest(token.encode(), run.token.encode()):
            self.refuse("AUTH-4", "wrong token for this attempt", message)
            return
        self.bound = self.extended = True
        self.features = frozenset(message.body["features"]) & frozenset(FEATURES)
        run.wire.hello(message)
        run.wire.negotiated(self.features)
        if "control" in self.features:
            run.control = self
        self.send(
            welcome(
                run.job_id, sorted(self.features), run.protocol.last_seq, run.heartbeat_interval_ms
            )
        )
        run.connected(self)

    # output

    def send(self, message: dict[str, Any]) -> None:
        """Write one line, closing a worker that lets too much output pile up (CTRL-6)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.run.max_line_bytes:
            log.warning(
                "job %s: worker does not read its connection; closing it (CTRL-6)", self.run.job_id
            )
            transport.abort()
            return
        transport.write(encode(message))
        self.run.wire.sent(message)

    def reject(self, exc: RemoteProtocolError, seq: int | None = None) -> None:
        """Discard a line with a logged reason (SRV-6); tell an extended peer (CTRL-5)."""
        self.run.metrics.invalid_lines += 1
        self.run.discards.warn(
            exc.code, "job %s: discarded line: %s %s", self.run.job_id, exc.code, exc
        )
        if (
            self.extended
            and self.transport
            and (self.transport.get_write_buffer_size() < ERROR_BACKLOG)
        ):
            self.send(error(self.run.job_id, exc.code, str(exc), exc.requirement, seq))

    def refuse(self, requirement: str, detail: str, message: Message) -> None:
        """AUTH-4: answer a hello with ``error`` and close; the job is untouched.

        A v1 peer (no hello) is never written to (NEG-3): it is only closed.
        """
        self.run.metrics.invalid_lines += 1
        self.run.discards.warn(
            requirement, "job %s: refused connection: %s: %s", self.run.job_id, requirement, detail
        )
        if self.transport is None:
            return
        if message.type == "hello":
            self.transport.write(encode(error(self.run.job_id, "auth", detail, requirement)))
        self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

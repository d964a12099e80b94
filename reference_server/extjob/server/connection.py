"""One worker connection: the socket's side of a core ``ServerConnection``.

A thin adapter, after the websockets library's asyncio layer: bytes read
go into the core, the core's replies go out. What the lines mean (binding,
AUTH-2..5, NEG-2/3, SRV-6, CTRL-5) is decided in ``extjob.protocol``; what
the messages mean for the job is the receiver's business. A whole read is
handed over as one intake, so that the store sees one transaction per read
(REPLAY-2).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from extjob.protocol import Intake, ServerConnection

log = logging.getLogger(__name__)


class Receiver(Protocol):
    """Who a connection reports to (the attempt's run)."""

    job_id: str

    def opened(self, conn: WorkerConnection) -> None: ...
    def deliver(self, conn: WorkerConnection, intake: Intake) -> None: ...
    def sent(self, data: bytes) -> None: ...
    def closed(self, conn: WorkerConnection) -> None: ...
    async def settled(self) -> None: ...


class WorkerConnection(asyncio.Protocol):
    def __init__(
        self, core: ServerConnection, receiver: Receiver, clock: Callable[[], float]
    ) -> None:
        self.core = core
        self.receiver = receiver
        self.clock = clock
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.receiver.opened(self)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # refused (AUTH-4): nothing after the bad line counts
        intake = self.core.receive_data(data, self.clock(), transport.get_write_buffer_size())
        self.receiver.deliver(self, intake)
        self.flush()
        if intake.refused is not None:
            transport.close()

    def eof_received(self) -> bool:
        cut = self.core.close_input()
        if cut is not None:
            log.warning("job %s: discarded line: %s", self.receiver.job_id, cut)
        # Close our side too, once what the worker sent is stored and acked
        # (commits are asynchronous; a worker may still read after a half-close).
        asyncio.get_running_loop().create_task(self._close_when_settled())
        return True

    async def _close_when_settled(self) -> None:
        await self.receiver.settled()
        self.flush()
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.core.connection_lost()
        self.receiver.closed(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # output

    def flush(self) -> None:
        """Write what the core owes the worker, closing a worker that lets
        too much output pile up (CTRL-6)."""
        data = self.core.data_to_send()
        transport = self.transport
        if not data or transport is None or transport.is_closing():
            return
        if self.core.overwhelmed(transport.get_write_buffer_size()):
            log.warning(
                "job %s: worker does not read its connection; closing it (CTRL-6)",
                self.receiver.job_id,
            )
            transport.abort()
            return
        transport.write(data)
        self.receiver.sent(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

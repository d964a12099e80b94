"""Bounds on the API's connections, so that HTTP clients cannot take the descriptors jobs need.

Anyone on the machine can connect to a loopback port. Without bounds, about
1,050 idle connections filled the usual limit of 1,024 open files, and the
next job to fall due failed for good. Three bounds, none of which needs the
client's cooperation:

- **Idle timeout** (``[http] idle_timeout_ms``, default 15 s): a connection
  that has not sent a whole request within that time of opening (or of its
  last response) is closed. aiohttp's keep-alive timer, which it starts at
  ``connection_made``, does it; a running request (an SSE stream) is never
  idle.
- **One request without the token**: a 401 closes the connection
  (``app._error``), so a client that does not know the token holds a
  connection for at most one request and the idle timeout.
- **A cap** (``[http] max_connections``, default a quarter of the open files
  limit, at most 1,024): a connection beyond it is answered ``503`` at once
  and closed, and the warning about it is rate-limited. The listen backlog
  is kept to half the cap, since asyncio accepts up to a backlog's worth of
  connections at once, each holding a descriptor until it is answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections.abc import Callable

from aiohttp import web

from ..ratelimit import LogLimiter

log = logging.getLogger(__name__)

MAX_DEFAULT_CONNECTIONS = 1024
MIN_DEFAULT_CONNECTIONS = 16


def default_max_connections() -> int:
    """A quarter of the open files limit: the rest is for the jobs and the database."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_DEFAULT_CONNECTIONS
    return max(MIN_DEFAULT_CONNECTIONS, min(MAX_DEFAULT_CONNECTIONS, soft // 4))


def accept_backlog(max_connections: int) -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one go:
    each holds a descriptor until the next loop iteration, even one answered 503."""
    return max(16, min(128, max_connections // 2))


_BUSY_BODY = json.dumps(
    {
        "error": {
            "code": "too_many_connections",
            "message": "the server has too many open connections; try again shortly",
        }
    }
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Busy(asyncio.Protocol):
    """Answers one connection over the cap with 503 and closes it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_BUSY)
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted from its creation to its end.

    aiohttp counts a connection only once ``connection_made`` runs, a loop
    iteration or more after ``accept()``: one burst of the accept loop could
    otherwise open a backlog's worth of connections beyond the cap.
    """

    def __init__(self, inner: asyncio.Protocol, count: list[int]) -> None:
        self._inner = inner
        self._count = count
        count[0] += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._count[0] -= 1
        self._inner.connection_lost(exc)


def capped(server: web.Server, max_connections: int) -> Callable[[], asyncio.BaseProtocol]:
    """A protocol factory for ``loop.create_server``: aiohttp's, up to ``max_connections``."""
    refusals = LogLimiter(log, "HTTP connections refused over max_connections")
    count = [0]

    def factory() -> asyncio.BaseProtocol:
        if count[0] >= max_connections:
            refusals.warn(
                "cap",
                "HTTP connection refused: %d open, max_connections is %d",
                count[0],
                max_connections,
            )
            return _Busy()
        return _Counted(server(), count)

    return factory

"""Server-Sent Events: the server's event bus as numbered, resumable streams.

One :class:`EventHub` per HTTP app numbers every event of the job server and
keeps the latest ``history`` of them in a ring indexed by number. An event is
encoded as an SSE frame the first time a stream needs it, once for all
streams: with no client connected, publishing is a counter and a slot. A
stream is a cursor into that ring, never a queue of its own. Once a stream
has caught up, the hub writes to its socket itself: the events of one loop
iteration (one read of a worker's socket) become one write per stream,
encoded once for all of them, with no task switch per stream, so a hundred
streams cost little more than one and batches grow with load.

Event ids are ``<boot>-<n>``: ``boot`` is random per HTTP app, so an id from
before a server restart is recognised as such and never confused with a
number of the new process.

Resume guarantees (``Last-Event-ID``):

- The id is of this process and still in the ring: every later event is
  sent, none is lost, none is repeated.
- Otherwise (an older id, or one from before a restart) a per-job stream
  sends the job's current state again (``job.state``) and goes on live; the
  all-jobs stream sends ``stream.reset``, after which the client re-reads
  what it shows over the REST API. Log lines are persisted, so nothing is
  lost for good: ``GET /api/jobs/{id}/logs?cursor=N`` returns them.
- A client that does not read (more than ``WRITE_BUFFER_LIMIT`` bytes queued
  for it) is disconnected: it reconnects with its ``Last-Event-ID`` like
  after any drop, so a slow client never holds memory or the server back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .metrics import Histogram

KEEPALIVE_SECONDS = 15.0
WRITE_BUFFER_LIMIT = 4 * 1024 * 1024
# The pause after a flush, as a multiple of the CPU that flush cost: writing
# to the streams (one send per stream, 5-10 us each) takes at most a third
# of a core, so under a flood of events to many streams batches grow instead
# of the backlog or the server's CPU; with few streams the pause is
# microseconds and every read of a worker's socket is written at once. CPU,
# not wall time: on a busy machine a flush that waited for a core cost no
# more, and pausing for the wait would add it to every stream's latency.
# (bench/http_sse_latency: 3 costs a stream ~1 ms more on average, 1 leaves
# the server above half a core on a quiet machine.)
FLUSH_PAUSE_RATIO = 2.0

# Seconds from an event's publication to its write to the last stream of its
# flush: the hub's share of what a client waits (the pause, then the writes).
DELAY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)

Snapshot = Callable[[], Awaitable[Mapping[str, Any] | None]]


class _Frame:
    """One event in the ring; encoded on first use (then ``data`` is let go)."""

    __slots__ = ("_data", "_encoded", "job_id", "name", "number")

    def __init__(self, number: int, job_id: str | None, name: str, data: Mapping[str, Any]):
        self.number = number
        self.job_id = job_id
        self.name = name
        self._data: Mapping[str, Any] | None = data
        self._encoded: bytes | None = None

    def encoded(self, event_id: Callable[[int], str]) -> bytes:
        if self._encoded is None:
            assert self._data is not None
            self._encoded = _encode(event_id(self.number), self.name, self._data)
            self._data = None
        return self._encoded


@dataclass(eq=False)
class _Live:
    """A caught-up stream: the hub writes its events straight to its socket."""

    transport: asyncio.WriteTransport
    job_id: str | None
    cursor: int
    ended: asyncio.Future[str]


class EventHub:
    """Numbers events, keeps the latest ``history`` of them, and writes them to streams."""

    def __init__(self, history: int, boot: str | None = None, start: int = 0) -> None:
        self.boot = boot or secrets.token_hex(4)
        self._ring: list[_Frame | None] = [None] * history
        self._start = start  # the ring holds no event up to this number
        self._last = start
        self._live: set[_Live] = set()
        self._flush_scheduled = False
        self._next_flush_at = 0.0
        self.closed = False
        self.published = 0
        self.writes = 0  # to a stream's socket: one per stream and flush
        self.write_cpu = 0.0  # seconds of CPU the flushes cost
        self.delay = Histogram(DELAY_BUCKETS)  # one observation per flush: its oldest event
        self._unwritten_since: float | None = None

    @property
    def last(self) -> int:
        """The number of the newest event (0 before the first)."""
        return self._last

    @property
    def streams(self) -> int:
        return len(self._live)

    def event_id(self, number: int) -> str:
        return f"{self.boot}-{number}"

    def publish(
        self, name: str, job_id: str | None, data: Mapping[str, Any], number: int | None = None
    ) -> None:
        """Add one event, numbered here or (cluster) by the shared event log.

        Cheap and synchronous: safe to call from a bus callback. ``data`` is
        kept until the event is encoded: the caller hands over a mapping
        nobody changes afterwards."""
        if number is None:
            number = self._last + 1
        elif number <= self._last:
            return  # seen already
        elif number > self._last + 1:
            self._start = number - 1  # a gap: resuming from before it means a reset
        self._last = number
        self._ring[number % len(self._ring)] = _Frame(number, job_id, name, data)
        self.published += 1
        if self._live:
            if self._unwritten_since is None:
                self._unwritten_since = time.monotonic()
            self._schedule_flush()

    def close(self) -> None:
        """End every stream (server shutdown)."""
        self.closed = True
        for live in tuple(self._live):
            self._end(live, "shutdown")

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The number to continue after, or None when ``last_event_id`` is unusable."""
        if not last_event_id:
            return None
        boot, _, number = last_event_id.strip().partition("-")
        if boot != self.boot or not number.isdigit():
            return None
        n = int(number)
        if n > self._last or n < self._oldest():
            return None
        return n

    def _oldest(self) -> int:
        """The oldest cursor the ring can continue after."""
        return max(self._start, self._last - len(self._ring))

    def since(self, cursor: int, job_id: str | None) -> bytes | None:
        """The frames after ``cursor`` (of one job, or all); None when the ring
        no longer reaches back to ``cursor``."""
        if cursor < self._oldest():
            return None
        size = len(self._ring)
        frames = []
        event_id = self.event_id
        for n in range(cursor + 1, self._last + 1):
            frame = self._ring[n % size]
            assert frame is not None and frame.number == n  # the ring reaches back to cursor
            if job_id is None or frame.job_id == job_id:
                frames.append(frame.encoded(event_id))
        return b"".join(frames)

    async def follow(
        self, transport: asyncio.WriteTransport, job_id: str | None, cursor: int
    ) -> str:
        """Write every event after ``cursor`` to ``transport`` until the client goes
        (``"gone"``), cannot keep up (``"slow"``) or the hub closes (``"shutdown"``)."""
        live = _Live(transport, job_id, cursor, asyncio.get_running_loop().create_future())
        if self.closed:
            return "shutdown"
        self._live.add(live)
        self._schedule_flush()
        try:
            while not live.ended.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(live.ended), KEEPALIVE_SECONDS)
                if not live.ended.done():
                    # A comment keeps proxies and idle timeouts from closing a
                    # quiet stream, and finds a client that has gone.
                    self._send(live, _KEEPALIVE)
            return live.ended.result()
        finally:
            self._live.discard(live)

    def _schedule_flush(self) -> None:
        # Events of one read chunk arrive in one loop iteration: write them
        # to the streams once, after all of them.
        if self._live and not self._flush_scheduled:
            self._flush_scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_at(max(loop.time(), self._next_flush_at), self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        started = time.thread_time()
        self._write_all()
        cost = time.thread_time() - started
        self.write_cpu += cost
        if self._unwritten_since is not None:
            self.delay.observe(time.monotonic() - self._unwritten_since)
            self._unwritten_since = None
        self._next_flush_at = asyncio.get_running_loop().time() + cost * FLUSH_PAUSE_RATIO

    def _write_all(self) -> None:
        # Streams at the same point get the same bytes: frame them once.
        chunks: dict[tuple[int, str | None], bytes | None] = {}
        for live in tuple(self._live):
            key = (live.cursor, live.job_id)
            if key not in chunks:
                frames = self.since(live.cursor, live.job_id)
                chunks[key] = _chunk(frames) if frames else frames
            chunk = chunks[key]
            live.cursor = self._last
            if chunk is None:  # more than the ring holds in one loop iteration
                self._end(live, "slow")
            elif chunk:
                self._send(live, chunk)

    def _send(self, live: _Live, chunk: bytes) -> None:
        transport = live.transport
        if transport.is_closing():
            self._end(live, "gone")
            return
        transport.write(chunk)
        self.writes += 1
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            self._end(live, "slow")

    def _end(self, live: _Live, reason: str) -> None:
        self._live.discard(live)
        if not live.ended.done():
            live.ended.set_result(reason)


def _chunk(data: bytes) -> bytes:
    # aiohttp sent the headers with chunked transfer encoding: one HTTP chunk.
    return b"%x\r\n%s\r\n" % (len(data), data)


_KEEPALIVE = _chunk(b": keepalive\n\n")


def _encode(event_id: str, name: str, data: Mapping[str, Any]) -> bytes:
    try:
        body = orjson.dumps(data, default=str)  # the hot path: once per event
    except TypeError:  # what orjson refuses (integers beyond 64 bits) json still writes
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), name.encode(), body)


async def stream(
    request: web.Request, hub: EventHub, job_id: str | None, snapshot: Snapshot | None
) -> web.StreamResponse:
    """Serve one SSE stream: all events (``job_id`` None) or one job's."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    # Sends the headers now: the hub writes the events to the socket itself.
    await response.write(b": extjob events\n\n")
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    cursor = hub.resume_point(last_event_id)
    if cursor is None:
        cursor = await _restart(response, hub, snapshot, resumed=bool(last_event_id))
    transport = request.transport
    if transport is not None and await hub.follow(transport, job_id, cursor) == "slow":
        transport.close()  # the client resumes with its Last-Event-ID
    return response


async def _restart(
    response: web.StreamResponse, hub: EventHub, snapshot: Snapshot | None, resumed: bool
) -> int:
    # Take the cursor before reading the state: an event that lands in
    # between is sent after the snapshot (possibly again), never lost.
    cursor = hub.last
    if snapshot is not None:
        state = await snapshot()
        if state is not None:
            await response.write(_encode(hub.event_id(cursor), "job.state", state))
    elif resumed:
        reason = {"reason": "Last-Event-ID is no longer in the server's history"}
        await response.write(_encode(hub.event_id(cursor), "stream.reset", reason))
    return cursor

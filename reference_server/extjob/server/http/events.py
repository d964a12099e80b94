"""Server-Sent Events: the server's event bus as numbered, resumable streams.

One :class:`EventHub` per HTTP app numbers every event of the job server and
keeps the latest ``history`` of them, already encoded as SSE frames, in a ring
indexed by number. Each open stream is a cursor into that ring: a stream
never has a queue of its own, so a hundred streams cost one encoding per
event, and a stream that wakes up late sends everything it missed in one
write (batching grows with load instead of latency).

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
  lost for good: ``GET /api/jobs/{id}/logs?after=N`` returns them.
- A stream that falls more than ``history`` events behind is treated the
  same way as a resume from too old an id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

KEEPALIVE_SECONDS = 15.0

Snapshot = Callable[[], Awaitable[Mapping[str, Any] | None]]


@dataclass(frozen=True)
class _Frame:
    number: int
    job_id: str | None
    data: bytes


class EventHub:
    """Numbers events, keeps the latest ``history`` of them, and wakes streams."""

    def __init__(self, history: int) -> None:
        self.boot = secrets.token_hex(4)
        self._ring: list[_Frame | None] = [None] * history
        self._last = 0
        self._waiters: asyncio.Future[None] | None = None
        self._wake_scheduled = False
        self.closed = False
        self.published = 0

    @property
    def last(self) -> int:
        """The number of the newest event (0 before the first)."""
        return self._last

    def event_id(self, number: int) -> str:
        return f"{self.boot}-{number}"

    def publish(self, name: str, job_id: str | None, data: Mapping[str, Any]) -> None:
        """Add one event. Cheap and synchronous: safe to call from a bus callback."""
        self._last += 1
        frame = _encode(self.event_id(self._last), name, data)
        self._ring[self._last % len(self._ring)] = _Frame(self._last, job_id, frame)
        self.published += 1
        # Events of one read chunk arrive in one loop iteration: wake the
        # streams once for all of them.
        if not self._wake_scheduled and self._waiters is not None:
            self._wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake)

    def close(self) -> None:
        """End every stream (server shutdown)."""
        self.closed = True
        self._wake()

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The number to continue after, or None when ``last_event_id`` is unusable."""
        if not last_event_id:
            return None
        boot, _, number = last_event_id.strip().partition("-")
        if boot != self.boot or not number.isdigit():
            return None
        n = int(number)
        if n > self._last or n < self._last - len(self._ring):
            return None
        return n

    def since(self, cursor: int, job_id: str | None) -> tuple[bytes, int] | None:
        """Frames after ``cursor`` (for one job, or all) and the new cursor.

        None when the ring no longer reaches back to ``cursor``.
        """
        if cursor < self._last - len(self._ring):
            return None
        size = len(self._ring)
        frames = []
        for n in range(cursor + 1, self._last + 1):
            frame = self._ring[n % size]
            assert frame is not None and frame.number == n  # the ring reaches back to cursor
            if job_id is None or frame.job_id == job_id:
                frames.append(frame.data)
        return b"".join(frames), self._last

    async def wait(self, cursor: int, timeout: float) -> None:
        """Return when there are events after ``cursor``, on close, or after ``timeout``."""
        if self._last > cursor or self.closed:
            return
        if self._waiters is None:
            self._waiters = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._waiters), timeout)

    def _wake(self) -> None:
        self._wake_scheduled = False
        waiters, self._waiters = self._waiters, None
        if waiters is not None and not waiters.done():
            waiters.set_result(None)


def _encode(event_id: str, name: str, data: Mapping[str, Any]) -> bytes:
    body = json.dumps(data, separators=(",", ":"), default=str)
    return f"id: {event_id}\nevent: {name}\ndata: {body}\n\n".encode()


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
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    cursor = hub.resume_point(last_event_id)
    if cursor is None:
        cursor = await _restart(response, hub, snapshot, resumed=bool(last_event_id))
    while not hub.closed:
        await hub.wait(cursor, KEEPALIVE_SECONDS)
        batch = hub.since(cursor, job_id)
        if batch is None:  # this client fell behind by more than the ring holds
            cursor = await _restart(response, hub, snapshot, resumed=True)
            continue
        frames, cursor = batch
        # A comment keeps proxies and idle-timeouts from closing a quiet stream.
        await response.write(frames or b": keepalive\n\n")
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

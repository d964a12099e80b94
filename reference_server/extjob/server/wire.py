"""The wire view of an attempt: its worker's messages and the server's answers.

What the conformance transcripts show for a test run, the dashboard shows for
a real job: each message with its time since the spawn, in (worker to server)
or out. It is for looking, not for the record (the store has that), so it is
bounded and costs the hot path almost nothing:

- Kept in memory, per attempt: the first ``FIRST`` messages (hello, welcome,
  started: how it began) and the newest ``LAST``; the rest are counted as
  omitted. One call and one append per read of the connection, not per
  message; a read's messages are kept as decoded, not copied.
- Bytes: a read larger than ``SMALL_READ`` may hold large messages, so its
  kept messages are encoded and cut to ``CLIP_BYTES`` at once; smaller reads
  are kept as decoded (each under ``SMALL_READ``). So one attempt holds at
  most about ``(FIRST + LAST) * SMALL_READ`` bytes, whatever its worker sends.
- Stored once, when the worker has exited (``Store.end_attempt``), every entry
  cut to ``CLIP_BYTES``: a running attempt's view lives in the memory of the
  server that runs it, and starts afresh when a restarted server re-adopts it.
- The hello's token is never kept.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from extjob.protocol import Message

FIRST = 8
LAST = 64
SMALL_READ = 8192
CLIP_BYTES = 1024

# (seconds since the spawn, "in" or "out", the message, or its start as text)
Entry = tuple[float, str, Any]
# What one read (or one message sent) adds to the newest: the messages are
# kept as they came (a Message, or a message the server wrote), bodies are
# taken out only when someone looks.
Chunk = tuple[float, str, Sequence[Any]]


class WireLog:
    """The bounded wire view of one attempt, and the features its worker negotiated."""

    __slots__ = ("_first", "_kept", "_last", "_origin", "features", "seen")

    def __init__(self, origin: float) -> None:
        self._origin = origin  # the monotonic time of the spawn
        self._first: list[Entry] = []
        self._last: collections.deque[Chunk] = collections.deque()
        self._kept = 0  # messages in _last
        self.seen = 0
        # NEG-2: what the hello named ([] for a v1 worker); None until it connects.
        self.features: list[str] | None = None

    def negotiated(self, features: Iterable[str]) -> None:
        self.features = sorted(features)

    def hello(self, message: Message) -> None:
        body = dict(message.body)
        body["token"] = "(hidden)"
        self._add("in", [body])

    def received(self, messages: Sequence[Message], nbytes: int) -> None:
        """One read of the connection: ``nbytes`` long, decoded into ``messages``.

        The hot path: one append per read, no copy of a small read's messages.
        """
        if len(self._first) < FIRST:
            self._add("in", [m.body for m in messages])
            return
        self.seen += len(messages)
        if len(messages) > LAST:
            messages = messages[-LAST:]
        if nbytes > SMALL_READ:  # may hold large messages: keep their start only
            messages = [_clip(m.body) for m in messages]
        last = self._last
        last.append((time.monotonic() - self._origin, "in", messages))
        self._kept += len(messages)
        while self._kept - len(last[0][2]) >= LAST:  # _push, inlined: once per read
            self._kept -= len(last.popleft()[2])

    def sent(self, message: Mapping[str, Any]) -> None:
        if len(self._first) < FIRST:
            self._add("out", [message])
            return
        self.seen += 1
        self._push((time.monotonic() - self._origin, "out", (message,)))

    def _add(self, direction: str, bodies: Sequence[Any]) -> None:
        """Bodies that may still belong among the first FIRST (rare: once per attempt)."""
        t = time.monotonic() - self._origin
        room = FIRST - len(self._first)
        self._first += [(t, direction, body) for body in bodies[:room]]
        self.seen += min(room, len(bodies))
        rest = bodies[room:]
        if rest:
            self.seen += len(rest)
            self._push((t, direction, rest[-LAST:]))

    def _push(self, chunk: Chunk) -> None:
        self._last.append(chunk)
        self._kept += len(chunk[2])
        while self._kept - len(self._last[0][2]) >= LAST:
            self._kept -= len(self._last.popleft()[2])

    def snapshot(self) -> dict[str, Any]:
        """The view as JSON: ``{"messages": [{"t", "dir", "message"}], "omitted"}``."""
        newest = [
            (t, direction, item.body if isinstance(item, Message) else item)
            for t, direction, items in self._last
            for item in items
        ][-LAST:]
        entries = [*self._first, *newest]
        return {
            "messages": [
                {"t": round(t * 1000), "dir": direction, "message": _clip(body)}
                for t, direction, body in entries
            ],
            # after the first FIRST messages, before the newest LAST
            "omitted": self.seen - len(entries),
        }


def _clip(body: Any) -> Any:
    """The message itself when small, else the start of its JSON text."""
    if isinstance(body, str):
        return body
    raw = orjson.dumps(body, default=str)
    if len(raw) <= CLIP_BYTES:
        return body
    return raw[:CLIP_BYTES].decode(errors="ignore") + f"… ({len(raw)} bytes)"

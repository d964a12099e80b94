"""The wire view of an attempt: its worker's messages and the server's answers.

What the conformance transcripts show for a test run, the dashboard shows for
a real job: each message with its time since the spawn, in (worker to server)
or out. It is for looking, not for the record (the store has that), so it is
bounded and costs the hot path almost nothing:

- Kept in memory, per attempt: the first ``FIRST`` messages (hello, welcome,
  started: how it began) and the newest ``LAST``; the rest are counted as
  omitted. One call per read of the connection, not per message, and at most
  ``LAST`` entries of a read are looked at.
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


class WireLog:
    """The bounded wire view of one attempt, and the features its worker negotiated."""

    __slots__ = ("_first", "_last", "_origin", "features", "seen")

    def __init__(self, origin: float) -> None:
        self._origin = origin  # the monotonic time of the spawn
        self._first: list[Entry] = []
        self._last: collections.deque[Entry] = collections.deque(maxlen=LAST)
        self.seen = 0
        # NEG-2: what the hello named ([] for a v1 worker); None until it connects.
        self.features: list[str] | None = None

    def negotiated(self, features: Iterable[str]) -> None:
        self.features = sorted(features)

    def hello(self, message: Message) -> None:
        body = dict(message.body)
        body["token"] = "(hidden)"
        self._add([body], "in", False)

    def received(self, messages: Sequence[Message], nbytes: int) -> None:
        """One read of the connection: ``nbytes`` long, decoded into ``messages``."""
        room = FIRST - len(self._first)
        keep = messages
        if len(messages) > room + LAST:  # the rest would be dropped at once
            keep = [*messages[: max(room, 0)], *messages[-LAST:]]
        self._add([m.body for m in keep], "in", nbytes > SMALL_READ)
        self.seen += len(messages) - len(keep)

    def sent(self, message: Mapping[str, Any]) -> None:
        self._add([message], "out", False)

    def _add(self, bodies: Sequence[Any], direction: str, clip: bool) -> None:
        t = time.monotonic() - self._origin
        self.seen += len(bodies)
        for body in bodies:
            entry = (t, direction, _clip(body) if clip else body)
            if len(self._first) < FIRST:
                self._first.append(entry)
            else:
                self._last.append(entry)

    def snapshot(self) -> dict[str, Any]:
        """The view as JSON: ``{"messages": [{"t", "dir", "message"}], "omitted"}``."""
        entries = [*self._first, *self._last]
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

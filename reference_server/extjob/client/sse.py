"""A sans-I/O parser for ``text/event-stream`` (the WHATWG SSE format)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SseEvent:
    id: str | None
    name: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseParser:
    """Bytes in, events out: ``feed(chunk) -> list[SseEvent]``."""

    def __init__(self) -> None:
        self._pending = b""
        self._id: str | None = None
        self._name = ""
        self._data: list[str] = []
        self.last_event_id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        events = []
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if self._data:
                    events.append(
                        SseEvent(self._id, self._name or "message", "\n".join(self._data))
                    )
                    if self._id is not None:
                        self.last_event_id = self._id
                self._name, self._data = "", []
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                self._data.append(value)
            elif field == "event":
                self._name = value
            elif field == "id":
                self._id = value
        return events

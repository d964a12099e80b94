"""The wire record of one case: every line in both directions, with times.

Times are seconds on the monotonic clock since the case began, so a failure
report reads like a log of what happened (the Autobahn "wirelog").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from extjob.protocol import Message, Problem

#: How much of a long line a rendered transcript shows.
SHOWN_CHARS = 240
#: A harness stall this long is noted in the transcript (seconds).
NOTED_STALL_S = 0.2


@dataclass(frozen=True)
class Entry:
    """One thing that happened: a line received or sent, or a harness event."""

    t: float  #: seconds since the case began
    direction: str  #: "worker" (worker → server), "server" (server → worker), "event"
    conn: int  #: connection number (1, 2, ...), 0 for events of the process
    text: str  #: the line as text, or what happened
    message: Message | None = None  #: the decoded message, if the line was valid
    problem: Problem | None = None  #: why a worker line is invalid

    @property
    def size(self) -> int:
        """The line's length in bytes, without its newline."""
        return len(self.text.encode(errors="replace"))

    def render(self) -> str:
        arrow = {"worker": "w→s", "server": "s→w", "event": " ··"}[self.direction]
        where = f"#{self.conn}" if self.conn else "  "
        text = (
            self.text
            if len(self.text) <= SHOWN_CHARS
            else (f"{self.text[:SHOWN_CHARS]}… ({len(self.text)} chars)")
        )
        line = f"{self.t:8.3f}s {where:>3} {arrow} {text}"
        return f"{line}\n{'':17}^ invalid: {self.problem}" if self.problem else line


@dataclass
class Transcript:
    """Entries in the order they happened."""

    started: float = field(default_factory=time.monotonic)
    entries: list[Entry] = field(default_factory=list)
    #: (when it ended, how long) the harness itself could not run, in seconds.
    stalls: list[tuple[float, float]] = field(default_factory=list)

    async def watch_stalls(self, tick: float = 0.05) -> None:
        """Note when the harness was starved of CPU (a loaded machine).

        Its receipt times are then late by as much: a timing check subtracts
        the stall (:meth:`stalled`) so that the worker is never blamed for it.
        """
        while True:
            before = time.monotonic()
            await asyncio.sleep(tick)
            late = time.monotonic() - before - tick
            if late >= tick:
                self.stalls.append((self.now(), late))
                if late >= NOTED_STALL_S:
                    self.event(f"the harness itself stalled {late * 1000:.0f} ms")

    def stalled(self, start: float, end: float) -> float:
        """Seconds of harness stall within ``(start, end]``."""
        return sum(max(0.0, min(end, t) - max(start, t - d)) for t, d in self.stalls)

    def now(self) -> float:
        return time.monotonic() - self.started

    def add(
        self,
        direction: str,
        conn: int,
        text: str,
        message: Message | None = None,
        problem: Problem | None = None,
    ) -> Entry:
        entry = Entry(self.now(), direction, conn, text, message, problem)
        self.entries.append(entry)
        return entry

    def event(self, text: str, conn: int = 0) -> Entry:
        return self.add("event", conn, text)

    def worker_lines(self) -> list[Entry]:
        return [e for e in self.entries if e.direction == "worker"]

    def messages(self) -> list[Entry]:
        """Valid worker messages, in received order, over all connections."""
        return [e for e in self.entries if e.direction == "worker" and e.message is not None]

    def render(self, limit: int = 120) -> list[str]:
        """The entries as lines; a long transcript keeps its head and its tail."""
        lines = [entry.render() for entry in self.entries]
        if len(lines) <= limit:
            return lines
        head, tail = limit * 2 // 3, limit // 3
        return [
            *lines[:head],
            f"          … {len(lines) - head - tail} entries left out …",
            *lines[-tail:],
        ]

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
#: How often the harness looks at its own clock; a stall is a tick or more late.
STALL_TICK_S = 0.05


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

    async def watch_stalls(self) -> None:
        """Note when the harness was starved of CPU (a loaded machine).

        What it noticed just after a stall it may have noticed late by as
        much: a timing check leaves that out (:meth:`late_by`) so that the
        worker is never blamed for it.
        """
        while True:
            before = time.monotonic()
            await asyncio.sleep(STALL_TICK_S)
            late = time.monotonic() - before - STALL_TICK_S
            if late >= STALL_TICK_S:
                self.stalls.append((self.now(), late))
                if late >= NOTED_STALL_S:
                    self.event(f"the harness itself stalled {late * 1000:.0f} ms")

    def late_by(self, start: float, end: float) -> float:
        """Seconds by which the harness may have noticed late what it noticed
        at ``end``: the run of stalls it was just coming out of, within ``(start, end]``.

        A stall that ended earlier delayed nothing the worker did after it (the
        worker's clock kept running), so it excuses nothing: otherwise a
        worker that waits far too long passes whenever the harness stalled
        somewhere in the wait. Stalls are in the order they ended; those less
        than a tick apart are one run.
        """
        late, edge = 0.0, end
        for t, d in reversed(self.stalls):
            if t - d >= end:
                continue  # began after end
            if t < edge - STALL_TICK_S:
                break
            late += max(0.0, min(end, t) - max(start, t - d))
            edge = t - d
        return late

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

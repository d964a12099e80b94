"""Warnings that cannot flood the log: a few in full, then one summary per window.

A worker (or anyone who can write to its socket) can send garbage as fast as
the server reads it, and every discarded line deserves a reason in the log
(SRV-6), but not one log record each: 10 s of garbage wrote 39,700 lines
(7.6 MB). A ``LogLimiter`` logs the first ``burst`` warnings of a window in
full and counts the rest; when the window ends (or the source goes away) it
logs one summary::

    1,234 more lines discarded from job j_1 in the last 10 s: invalid_json 1,200, line_too_long 34

``limit_loop_errors`` does the same for the event loop's own error reports:
an accept loop out of file descriptors reports every failed ``accept()``
with a traceback (13,000 of them in 8 s).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

BURST = 5
WINDOW = 10.0  # seconds
MAX_LOOP_MESSAGES = 100


class LogLimiter:
    """Rate-limited warnings of one source; ``what`` names them in the summary."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        burst: int = BURST,
        window: float = WINDOW,
        level: int = logging.WARNING,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._log = logger
        self._level = level
        self._what = what
        self._burst = burst
        self._window = window
        self._loop = loop or asyncio.get_running_loop()
        self._started = 0.0
        self._logged = 0
        self._suppressed: collections.Counter[str] = collections.Counter()
        self._timer: asyncio.TimerHandle | None = None

    def warn(self, reason: str, message: str, *args: Any, **kwargs: Any) -> None:
        """Log ``message % args`` unless the burst is spent; ``reason`` groups the summary."""
        now = self._loop.time()
        if now - self._started >= self._window:
            self.flush()
            self._started = now
            self._logged = 0
        if self._logged < self._burst:
            self._logged += 1
            self._log.log(self._level, message, *args, **kwargs)
            return
        self._suppressed[reason] += 1
        if self._timer is None:
            self._timer = self._loop.call_at(self._started + self._window, self.flush)

    def flush(self) -> None:
        """Log the summary of what was held back, if anything was."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._suppressed:
            return
        total = sum(self._suppressed.values())
        seconds = max(1, round(self._loop.time() - self._started))
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in self._suppressed.most_common())
        summary = f"{total:,} more {self._what} in the last {seconds} s: {reasons}"
        self._log.log(self._level, "%s", summary)
        self._suppressed.clear()

    close = flush


def limit_loop_errors(loop: asyncio.AbstractEventLoop, logger: logging.Logger) -> None:
    """Rate-limit the loop's error reports, per message (``socket.accept() out of system
    resource``, say), keeping the default handler's wording and traceback for the first ones."""
    limiters: dict[str, LogLimiter] = {}

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "unhandled error"))
        limiter = limiters.get(message)
        if limiter is None:
            if len(limiters) >= MAX_LOOP_MESSAGES:  # messages that name a callback vary
                limiters.clear()
            limiter = limiters[message] = LogLimiter(
                logger, f"event loop errors like {message!r}", level=logging.ERROR, loop=loop
            )
        exc = context.get("exception")
        reason = type(exc).__name__ if exc is not None else "error"
        if exc is not None and getattr(exc, "strerror", None):
            reason = f"{reason}: {exc.strerror}"
        limiter.warn(reason, "%s", message, exc_info=exc)

    loop.set_exception_handler(handle)

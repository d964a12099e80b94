"""Tailing a worker's standard output and error files into its log (SRV-7).

The files outlive the server; the offset of the last whole line taken is
stored with the log entries in one transaction, so that after a restart the
tail resumes exactly where the recorded log ends: no line twice, none lost.
"""

from __future__ import annotations

import os

from .resources import is_transient

# Read at most this much per poll, so a chatty worker cannot stall the loop.
CHUNK = 1 << 20
# A line longer than this without a newline is cut into pieces of this size.
MAX_LINE = 64 * 1024


class OutputTail:
    def __init__(self, path: str, offset: int = 0) -> None:
        self.path = path
        self.offset = offset

    def read_lines(self, final: bool = False) -> list[str] | None:
        """Whole lines appended since the last call; ``final`` also takes an unfinished one.

        None: the server is out of descriptors for now; the lines wait in the file.
        """
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return []
        if size <= self.offset:
            return []
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read(CHUNK)
        except OSError as exc:
            if not is_transient(exc):
                raise
            return None
        end = chunk.rfind(b"\n") + 1
        if end == 0 and (final or len(chunk) >= MAX_LINE):
            end = min(len(chunk), MAX_LINE)
        elif final and len(chunk) < CHUNK:
            end = len(chunk)
        if end == 0:
            return []
        self.offset += end
        text = chunk[:end].decode("utf-8", errors="replace")
        return [line.rstrip("\r") for line in text.split("\n") if line.strip()]

"""NDJSON framing (SPEC section 3): bytes in, lines out; objects in, bytes out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import LocalProtocolError
from ._timing import DEFAULT_MAX_LINE_BYTES


@dataclass(frozen=True)
class OversizedLine:
    """A line longer than the limit was skipped (LIMIT-1); ``size`` is its length."""

    size: int


class LineBuffer:
    """Splits a byte stream into lines, in memory bounded by the line limit.

    ``feed`` returns the complete lines found so far, without ``\\n`` (and
    without a ``\\r`` before it, FRAME-1). A line longer than
    ``max_line_bytes`` is not kept: its bytes are dropped as they arrive and,
    once its newline comes, it is reported as :class:`OversizedLine`
    (FRAME-4), so a 100 MB line costs no more memory than a 16 MB one.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()
        self._skipping = 0  # bytes dropped so far of an oversized line

    @property
    def pending(self) -> int:
        """Bytes of the incomplete line held (or skipped) so far."""
        return self._skipping or len(self._partial)

    def feed(self, data: bytes) -> list[bytes | OversizedLine]:
        pieces = data.split(b"\n")
        rest = pieces.pop()  # what follows the last newline: an incomplete line
        if pieces:
            first = self._finish(pieces[0])  # completes what was held before
            limit = self.max_line_bytes
            if len(data) <= limit and b"\r" not in data:  # no other piece needs a look
                lines: list[bytes | OversizedLine] = pieces  # type: ignore[assignment]
                lines[0] = first
            else:
                lines = [first] + [
                    self._finish(p) if len(p) > limit or p.endswith(b"\r") else p
                    for p in pieces[1:]
                ]
        else:
            lines = []
        self._hold(rest)
        return lines

    def _hold(self, chunk: bytes) -> None:
        if self._skipping:
            self._skipping += len(chunk)
        elif len(self._partial) + len(chunk) > self.max_line_bytes + 1:  # +1: a final \r
            self._skipping = len(self._partial) + len(chunk)
            self._partial.clear()
        else:
            self._partial += chunk

    def _finish(self, tail: bytes) -> bytes | OversizedLine:
        if self._skipping:
            size, self._skipping = self._skipping + len(tail), 0
            return OversizedLine(size)
        if self._partial:
            line = bytes(self._partial) + tail
            self._partial.clear()
        else:
            line = tail
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line_bytes:
            return OversizedLine(len(line))
        return line


def encode(obj: Mapping[str, Any]) -> bytes:
    """One message as a line: compact UTF-8 JSON and ``\\n`` (FRAME-1, FRAME-2)."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8") + b"\n"
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise LocalProtocolError(f"cannot encode message: {exc}") from exc

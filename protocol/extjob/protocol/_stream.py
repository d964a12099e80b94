"""Stream rules (SPEC section 9) over a captured worker -> server stream."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ._errors import RemoteProtocolError
from ._messages import SEQUENCED_TYPES, Message
from ._schemas import Problem
from ._state import Attempt, AttemptState

#: How many recorded messages a replay can be compared against (STREAM-4).
#: Replays reach back only to unacknowledged messages, a short way; the bound
#: keeps a million-line capture in constant memory.
REPLAY_WINDOW = 65_536


class StreamChecker:
    """Feed it every message of one stream in received order.

    ``check`` returns the problems a message causes; ``finish`` those of the
    stream as a whole. Schema validity is checked before (``decode``).
    """

    def __init__(self) -> None:
        self._attempt: Attempt | None = None
        self._count = 0
        self._sequenced: bool | None = None  # STREAM-6, set by the first sequenced type
        self._connection_seq = 0  # last seq since the latest hello
        self._max_seq = 0
        self._bodies: OrderedDict[int, Mapping[str, Any]] = OrderedDict()
        self._last_sequenced_time: int | None = None
        self._last_unsequenced_time: int | None = None

    def check(self, msg: Message) -> list[Problem]:
        self._count += 1
        if self._attempt is None:
            self._attempt = Attempt(msg.job_id)
            if msg.type not in ("hello", "started"):
                return [Problem("STREAM-2", "type", f"first message is {msg.type!r}, not started")]
        if msg.job_id != self._attempt.job_id:
            return [
                Problem("STREAM-1", "jobId", f"{msg.job_id!r}; stream is {self._attempt.job_id!r}")
            ]
        if msg.type == "hello":
            self._connection_seq = 0
        replay = msg.seq is not None and msg.seq <= self._max_seq
        problems = self._check_seq(msg)
        if problems or replay:
            return problems
        problems += self._check_time(msg)
        problems += self._check_lifecycle(msg)
        return problems

    def finish(self) -> list[Problem]:
        if self._count == 0:
            return [Problem("STREAM-2", None, "empty stream: no message at all")]
        return []

    def _check_seq(self, msg: Message) -> list[Problem]:
        if msg.type in SEQUENCED_TYPES:
            has_seq = msg.seq is not None
            if self._sequenced is None:
                self._sequenced = has_seq
            elif self._sequenced != has_seq:
                state = "carries" if has_seq else "lacks"
                return [Problem("STREAM-6", "seq", f"{msg.type} {state} seq, unlike earlier ones")]
        if msg.seq is None:
            return []
        if msg.seq <= self._connection_seq:
            return [
                Problem(
                    "STREAM-4", "seq", f"{msg.seq} after {self._connection_seq} on one connection"
                )
            ]
        self._connection_seq = msg.seq
        if msg.seq > self._max_seq:
            self._max_seq = msg.seq
            self._bodies[msg.seq] = msg.body
            if len(self._bodies) > REPLAY_WINDOW:
                self._bodies.popitem(last=False)
            return []
        first = self._bodies.get(msg.seq)
        if first is not None and first != msg.body:
            return [
                Problem("STREAM-4", "seq", f"replay of seq {msg.seq} differs from the original")
            ]
        return []

    def _check_time(self, msg: Message) -> list[Problem]:
        if msg.seq is not None:
            previous, self._last_sequenced_time = self._last_sequenced_time, msg.timestamp
        else:
            previous, self._last_unsequenced_time = self._last_unsequenced_time, msg.timestamp
        if previous is not None and msg.timestamp < previous:
            return [
                Problem(
                    "STREAM-5", "timestamp", f"{msg.timestamp} is before the previous {previous}"
                )
            ]
        return []

    def _check_lifecycle(self, msg: Message) -> list[Problem]:
        assert self._attempt is not None  # set by check()
        if self._attempt.state is AttemptState.FINISHED and msg.type != "hello":
            what = "a second terminal message" if msg.is_terminal else f"{msg.type!r}"
            return [Problem("STREAM-3", "type", f"{what} after the terminal message")]
        try:
            verdict = self._attempt.receive(msg)
        except RemoteProtocolError as exc:
            return [Problem(exc.requirement, exc.field, exc.detail)]
        if verdict.tolerated:
            return [Problem("STREAM-2", "type", f"{msg.type!r} before started (LIFE-1)")]
        return []

"""Stream rules (SPEC section 9) over a captured worker -> server stream."""

from __future__ import annotations

import orjson

from ._errors import RemoteProtocolError
from ._kinds import SEQUENCED_TYPES
from ._messages import Message
from ._schemas import Problem
from ._state import TRANSITIONS, Attempt, AttemptState

#: How far back a replay is compared with its original (STREAM-4), in
#: messages and in bytes. Replays reach back only to unacknowledged messages,
#: a short way; the bounds keep a capture of millions of lines in bounded memory.
REPLAY_WINDOW = 65_536
REPLAY_WINDOW_BYTES = 64 * 1024 * 1024

_RUNNING = AttemptState.RUNNING
#: Types that leave a running attempt running: the common case, checked
#: without a round trip through the Attempt (``started`` is a reconnect).
_STAY_RUNNING = frozenset(
    t for t, state in TRANSITIONS[_RUNNING].items() if state is _RUNNING and t != "started"
)
_NO_PROBLEMS: list[Problem] = []


class StreamChecker:
    """Feed it every message of one stream in received order.

    ``check`` returns the problems a message causes; ``finish`` those of the
    stream as a whole. Schema validity is checked before (``decode``). This
    runs once per line in ``extjob validate``, hence the flat code.
    """

    def __init__(self) -> None:
        self._attempt: Attempt | None = None
        self._count = 0
        self._sequenced: bool | None = None  # STREAM-6: set by the first sequenced type
        self._connection_seq = 0  # the last seq since the latest hello
        self._max_seq = 0
        self._firsts: dict[int, bytes] = {}  # seq -> its first line, for replays
        self._firsts_size = 0
        self._last_sequenced_time = 0
        self._last_unsequenced_time = 0

    def check(self, msg: Message, line: bytes | None = None) -> list[Problem]:
        """The problems ``msg`` causes; ``line``, its raw bytes if at hand,
        saves re-encoding it to compare a later replay."""
        self._count += 1
        attempt = self._attempt
        if attempt is None:
            # STREAM-2's first message is the lifecycle's business: a v1
            # worker's heartbeat first is tolerated (LIFE-2), a warning.
            attempt = self._attempt = Attempt(msg.job_id)
        if msg.job_id != attempt.job_id:
            return [Problem("STREAM-1", "jobId", f"{msg.job_id!r}; stream is {attempt.job_id!r}")]

        seq = msg.seq
        if msg.type in SEQUENCED_TYPES:
            if self._sequenced is None:
                self._sequenced = seq is not None
            elif self._sequenced is (seq is None):
                state = "lacks" if seq is None else "carries"
                return [Problem("STREAM-6", "seq", f"{msg.type} {state} seq, unlike earlier ones")]

        if seq is None:
            if msg.type == "hello":
                self._connection_seq = 0
            problems = self._check_time(msg.timestamp, "_last_unsequenced_time")
        else:
            if seq <= self._connection_seq:
                after = f"after {self._connection_seq} on one connection"
                return [Problem("STREAM-4", "seq", f"{seq} {after}")]
            self._connection_seq = seq
            if seq <= self._max_seq:
                return self._check_replay(msg, line)
            self._remember(msg, line)
            problems = self._check_time(msg.timestamp, "_last_sequenced_time")

        if attempt.state is _RUNNING and msg.type in _STAY_RUNNING:
            return problems
        return problems + self._check_lifecycle(attempt, msg)

    def finish(self) -> list[Problem]:
        if self._count == 0:
            return [Problem("STREAM-2", None, "empty stream: no message at all")]
        return []

    def _remember(self, msg: Message, line: bytes | None) -> None:
        assert msg.seq is not None  # only sequenced messages are replayed
        self._max_seq = msg.seq
        first = line if line is not None else orjson.dumps(msg.body)
        self._firsts[msg.seq] = first
        self._firsts_size += len(first)
        if len(self._firsts) > 2 * REPLAY_WINDOW or self._firsts_size > REPLAY_WINDOW_BYTES:
            kept = list(self._firsts.items())[-REPLAY_WINDOW:]  # in seq order: oldest first
            while len(kept) > 1 and sum(len(f) for _, f in kept) > REPLAY_WINDOW_BYTES // 2:
                kept = kept[len(kept) // 2 :]
            self._firsts = dict(kept)
            self._firsts_size = sum(len(f) for _, f in kept)

    def _check_replay(self, msg: Message, line: bytes | None) -> list[Problem]:
        assert msg.seq is not None  # a replay has a seq by definition
        first = self._firsts.get(msg.seq)
        if first is None or first == line or orjson.loads(first) == msg.body:
            return _NO_PROBLEMS
        return [Problem("STREAM-4", "seq", f"replay of seq {msg.seq} differs from the first")]

    def _check_time(self, timestamp: int, last: str) -> list[Problem]:
        previous: int = getattr(self, last)
        setattr(self, last, timestamp)
        if timestamp < previous:
            return [Problem("STREAM-5", "timestamp", f"{timestamp} is before {previous}")]
        return []

    def _check_lifecycle(self, attempt: Attempt, msg: Message) -> list[Problem]:
        if attempt.state is AttemptState.FINISHED and msg.type != "hello":
            what = "a second terminal message" if msg.is_terminal else repr(msg.type)
            return [Problem("STREAM-3", "type", f"{what} after the terminal message")]
        try:
            verdict = attempt.receive(msg)
        except RemoteProtocolError as exc:
            return [Problem(exc.requirement, exc.field, exc.detail)]
        if verdict.tolerated:
            # LIFE-2: servers tolerate it, so it is a warning, against the
            # rule the worker broke (LIFE-1), also as the first message.
            detail = f"{msg.type!r} before started (servers tolerate it, LIFE-2)"
            return [Problem("LIFE-1", "type", detail, "warning")]
        return []

"""Stream rules (SPEC section 9) over a captured worker -> server stream."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from itertools import compress, count, islice, repeat
from operator import is_, itemgetter, le, lt
from typing import Any, NamedTuple

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
_UNSEQUENCED_TYPES = _STAY_RUNNING - SEQUENCED_TYPES  # heartbeat
_NO_PROBLEMS: list[Problem] = []
#: The shortest stretch :func:`runs` still cuts in two to find a run in.
RUN_MIN = 32

_type_field = itemgetter("type")
_job_id_field = itemgetter("jobId")
_timestamp_field = itemgetter("timestamp")


class OrdinaryRun(NamedTuple):
    """Consecutive messages that can only keep a running attempt running and
    break no stream rule among themselves (:func:`ordinary_run`): what
    :meth:`StreamChecker.apply_run` needs to check them against what came
    before, a few numbers instead of a message per line."""

    job_id: str
    length: int
    #: Whether its sequenced-type messages carry seq (all of them do, or
    #: none does, STREAM-6); None: it has none.
    sequenced: bool | None
    #: The seq of each message, None where it has none; those there
    #: strictly increase (STREAM-4), from ``seq_range[0]`` to ``seq_range[1]``.
    seqs: list[int | None]
    seq_range: tuple[int, int] | None
    #: (first, last) timestamp of the messages with and without seq, each
    #: never decreasing (STREAM-5); None: there are none.
    sequenced_times: tuple[int, int] | None
    unsequenced_times: tuple[int, int] | None


def _ascending(values: list[Any], strictly: bool) -> bool:
    return all(map(lt if strictly else le, values, islice(values, 1, None)))


def _ends(values: list[Any]) -> tuple[Any, Any] | None:
    return (values[0], values[-1]) if values else None


def _nones(values: Iterable[Any]) -> Iterator[bool]:
    return map(is_, values, repeat(None))


def _ends_where(times: list[int], seqs: list[int | None], carried: bool) -> tuple[int, int] | None:
    """(first, last) of the ascending ``times`` of the messages that carry a
    seq (or, ``carried`` False, of those that do not), by their positions."""
    picked = compress(range(len(seqs)), seqs if carried else _nones(seqs))
    first = next(picked, None)
    if first is None:
        return None
    last = (
        len(seqs)
        - 1
        - next(compress(count(), reversed(seqs) if carried else _nones(reversed(seqs))))
    )
    return times[first], times[last]


def ordinary_run(bodies: Sequence[Any], types: list[Any] | None = None) -> OrdinaryRun | None:
    """The :class:`OrdinaryRun` of schema-valid message bodies (None for a blank or
    bad line) if they are ordinary among themselves: one jobId, types that
    leave a running attempt running, seq on all sequenced types and nothing
    else, or on none, seqs strictly increasing, timestamps in order. Else
    None: then they are checked one by one. No state, so that a worker
    process can compute it; native loops over the bodies, no Python code
    per message (``extjob validate`` runs it on every line). ``types``: the
    bodies' types, if known already (``decode_bodies``)."""
    if types is None:
        try:
            types = list(map(_type_field, bodies))
        except TypeError:  # a None: a blank or bad line
            return None
    if not types or not _STAY_RUNNING.issuperset(types):
        return None
    job_ids = list(map(_job_id_field, bodies))
    if job_ids.count(job_ids[0]) != len(job_ids):
        return None
    seqs: list[int | None] = list(map(dict.get, bodies, repeat("seq")))
    carried = list(compress(seqs, seqs))  # a valid seq is >= 1, so true
    unsequenced = sum(map(types.count, _UNSEQUENCED_TYPES))
    if not carried:
        sequenced = None if unsequenced == len(types) else False
    elif len(carried) == len(types) - unsequenced and _UNSEQUENCED_TYPES.isdisjoint(
        compress(types, seqs)
    ):
        sequenced = True  # every sequenced-type message carries seq, no other does
    else:
        return None
    if not _ascending(carried, strictly=True):
        return None
    times = list(map(_timestamp_field, bodies))
    if _ascending(times, strictly=False):  # one clock: both kinds in order
        with_seq, without_seq = _ends_where(times, seqs, True), _ends_where(times, seqs, False)
    else:
        timed = list(compress(times, seqs)), list(compress(times, _nones(seqs)))
        if not (_ascending(timed[0], strictly=False) and _ascending(timed[1], strictly=False)):
            return None
        with_seq, without_seq = _ends(timed[0]), _ends(timed[1])
    return OrdinaryRun(
        job_ids[0], len(types), sequenced, seqs, _ends(carried), with_seq, without_seq
    )


def runs(
    bodies: Sequence[Any], types: list[Any] | None = None
) -> list[tuple[int, int, OrdinaryRun | None]]:
    """A batch's bodies cut into (start, end, run): ordinary runs, and
    stretches of at most :data:`RUN_MIN` lines (run None) to check one by
    one. Found by bisection, so that a few unusual lines (started, hello,
    the terminal message, a bad line) cost little in a long batch."""
    parts: list[tuple[int, int, OrdinaryRun | None]] = []
    pending = [(0, len(bodies))] if bodies else []
    while pending:
        start, end = pending.pop()
        run = ordinary_run(bodies[start:end], types[start:end] if types else None)
        if run is None and end - start > RUN_MIN:
            middle = (start + end) // 2
            pending += [(middle, end), (start, middle)]  # the first half is taken next
        else:
            parts.append((start, end, run))
    return parts


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
        # The first line of each seq, for replays: seqs only ever grow (a
        # smaller one is a replay or an error), so two sorted lists do.
        self._first_seqs: list[int] = []
        self._firsts: list[bytes] = []
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

    def apply_run(self, run: OrdinaryRun, lines: Sequence[bytes]) -> bool:
        """Take a whole run (its raw ``lines``, for replays) if every message
        of it would pass :meth:`check` with no problem, and change the state
        as those checks would: True. Else False, nothing changed: check the
        run's messages one by one, which also says what is wrong. What
        :meth:`check` looks at, in its order: the jobId (STREAM-1), seq
        present or not (STREAM-6), seq above every earlier one (STREAM-4,
        no replay), timestamps (STREAM-5), a running attempt that the run's
        types leave running (lifecycle)."""
        attempt = self._attempt
        if attempt is None or attempt.state is not _RUNNING or run.job_id != attempt.job_id:
            return False
        if run.sequenced is not None and run.sequenced is not self._sequenced:
            return False  # (running, the stream's started has set _sequenced)
        seq_range, with_seq, without_seq = run.seq_range, run.sequenced_times, run.unsequenced_times
        if seq_range and seq_range[0] <= self._max_seq:
            return False
        if with_seq and with_seq[0] < self._last_sequenced_time:
            return False
        if without_seq and without_seq[0] < self._last_unsequenced_time:
            return False
        self._count += run.length
        if seq_range:
            self._connection_seq = self._max_seq = seq_range[1]
            seqs = run.seqs
            self._first_seqs += compress(seqs, seqs)  # type: ignore[arg-type]  # no None
            firsts = list(compress(lines, seqs))
            self._firsts += firsts
            self._firsts_size += sum(map(len, firsts))
            self._forget_old_firsts()
        if with_seq:
            self._last_sequenced_time = with_seq[1]
        if without_seq:
            self._last_unsequenced_time = without_seq[1]
        return True

    def finish(self) -> list[Problem]:
        if self._count == 0:
            return [Problem("STREAM-2", None, "empty stream: no message at all")]
        return []

    def _remember(self, msg: Message, line: bytes | None) -> None:
        assert msg.seq is not None  # only sequenced messages are replayed
        self._max_seq = msg.seq
        first = line if line is not None else orjson.dumps(msg.body)
        self._first_seqs.append(msg.seq)
        self._firsts.append(first)
        self._firsts_size += len(first)
        self._forget_old_firsts()

    def _forget_old_firsts(self) -> None:
        """Keep the latest :data:`REPLAY_WINDOW` messages (fewer if they are
        over half of :data:`REPLAY_WINDOW_BYTES`) once there are twice as many
        or they are over it. In seq order, oldest first."""
        if len(self._firsts) > 2 * REPLAY_WINDOW or self._firsts_size > REPLAY_WINDOW_BYTES:
            keep = REPLAY_WINDOW
            size = sum(map(len, self._firsts[-keep:]))
            while keep > 1 and size > REPLAY_WINDOW_BYTES // 2:
                keep //= 2
                size = sum(map(len, self._firsts[-keep:]))
            del self._first_seqs[:-keep], self._firsts[:-keep]
            self._firsts_size = size

    def _check_replay(self, msg: Message, line: bytes | None) -> list[Problem]:
        assert msg.seq is not None  # a replay has a seq by definition
        at = bisect_left(self._first_seqs, msg.seq)
        found = at < len(self._first_seqs) and self._first_seqs[at] == msg.seq
        first = self._firsts[at] if found else None
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

"""The lifecycle of one attempt, as data (SPEC section 5.1).

Rule 1, after h11's ``_state.py``: everything that moves an attempt from one
state to another lives in :data:`TRANSITIONS`. The server, the conformance
harness and ``extjob validate`` all drive this one table.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress, islice
from operator import attrgetter, lt
from typing import Literal

from ._errors import RemoteProtocolError
from ._kinds import KINDS, SEQUENCED_TYPES
from ._messages import Message


class AttemptState(enum.Enum):
    SPAWNED = "spawned"  # spawned, started not yet received
    RUNNING = "running"
    FINISHED = "finished"  # a terminal message was recorded

    # Members are singletons compared by identity, so identity hashing is
    # exact; Enum's own __hash__ is Python code, and receive() looks the
    # state up in TRANSITIONS for every message.
    __hash__ = object.__hash__


def _transitions() -> dict[AttemptState, dict[str, AttemptState]]:
    spawned, running, finished = AttemptState.SPAWNED, AttemptState.RUNNING, AttemptState.FINISHED
    return {
        spawned: {
            **{t: spawned for t, k in KINDS.items() if k.before_start},
            **{t: running for t, k in KINDS.items() if k.starts},
        },
        # ``started`` in running is a v1 worker's reconnect (LIFE-3).
        running: {t: finished if k.terminal else running for t, k in KINDS.items()},
        finished: {t: finished for t, k in KINDS.items() if k.after_terminal},
    }


#: state -> message type -> next state, derived from the per-type table
#: (``_kinds.KINDS``). A type missing from a state's row is not allowed there
#: (see :meth:`Attempt.receive` for what happens instead).
TRANSITIONS: dict[AttemptState, dict[str, AttemptState]] = _transitions()

_RUNNING = AttemptState.RUNNING
#: The types a running attempt takes as they come, staying running: not its
#: ``started`` (a v1 reconnect, LIFE-3), not ``hello`` (it binds a connection,
#: AUTH-3), not a terminal message. The bulk of every stream.
ORDINARY_TYPES = frozenset(
    t
    for t, following in TRANSITIONS[_RUNNING].items()
    if following is _RUNNING and not KINDS[t].starts and not KINDS[t].before_start
)
_UNSEQUENCED_ORDINARY = ORDINARY_TYPES - SEQUENCED_TYPES  # heartbeat
_types_of = attrgetter("type")
_job_ids_of = attrgetter("job_id")
_seqs_of = attrgetter("seq")

Action = Literal["record", "duplicate", "liveness", "reconnect"]


@dataclass(frozen=True)
class Verdict:
    """What the receiver should do with a message.

    ``record``: new, store it (and ack its seq). ``duplicate``: already
    recorded (REPLAY-5), ignore it but ack again. ``liveness``: refresh
    liveness only (heartbeat, hello, private x- types). ``reconnect``: a v1
    worker announced itself again (LIFE-3). ``tolerated`` names the rule a
    tolerated deviation broke (LIFE-2), for logs and reports.
    """

    action: Action
    tolerated: str | None = None


# Verdicts are immutable, so the common ones are made once: receive() runs
# for every message the server reads (its hot path).
_RECORD = Verdict("record")
_LIVENESS = Verdict("liveness")
_DUPLICATE = Verdict("duplicate")
_RECONNECT = Verdict("reconnect")


class Attempt:
    """The receiving side's view of one attempt of one job: its lifecycle
    state and the last ``seq`` it recorded (REPLAY-5)."""

    __slots__ = ("job_id", "last_seq", "state")

    def __init__(self, job_id: str, last_seq: int = 0, state: AttemptState = AttemptState.SPAWNED):
        self.job_id = job_id
        self.last_seq = last_seq
        self.state = state

    def copy(self) -> Attempt:
        return Attempt(self.job_id, self.last_seq, self.state)

    def receive_all(self, msgs: Sequence[Message], replay: bool | None = None) -> bool:
        """Apply a run of messages in one go, exactly as :meth:`receive` one
        by one would, when that is plain: the attempt is running, and every
        message is of its job, of an ordinary type (:data:`ORDINARY_TYPES`)
        and new, its seq (where replay counts one) above the one before.
        Then each is recorded, heartbeats aside (a sign of life), and True
        is returned. Otherwise False, and nothing has changed: ``receive``
        them one by one, which says what is unusual (a duplicate, a gap in
        the rules, REPLAY-1)."""
        if self.state is not _RUNNING or not msgs:
            return False
        types = list(map(_types_of, msgs))
        kinds = set(types)
        if not kinds <= ORDINARY_TYPES:
            return False
        if list(map(_job_ids_of, msgs)).count(self.job_id) != len(msgs):
            return False  # SRV-5
        if replay is False:
            return True  # seq means nothing on the connection (NEG-2)
        seqs = list(map(_seqs_of, msgs))
        if not kinds.isdisjoint(_UNSEQUENCED_ORDINARY):
            unsequenced = list(compress(seqs, map(_UNSEQUENCED_ORDINARY.__contains__, types)))
            if unsequenced.count(None) != len(unsequenced):
                return False  # a heartbeat with a seq
            seqs = list(compress(seqs, map(SEQUENCED_TYPES.__contains__, types)))
            if not seqs:
                return True
        if None in seqs or not seqs[0] > self.last_seq:
            return False  # REPLAY-1, or a duplicate (REPLAY-5)
        if not all(map(lt, seqs, islice(seqs, 1, None))):
            return False
        self.last_seq = seqs[-1]
        return True

    def receive(self, msg: Message, replay: bool | None = None) -> Verdict:
        """Apply one message. ``replay``: whether the connection it came on
        negotiated replay. True: every sequenced type must carry ``seq``
        (REPLAY-1). False: ``seq`` means nothing on it (features are per
        connection, NEG-2), so it neither records nor dedupes. None: not known
        (a captured stream), ``seq`` counts where present."""
        if msg.job_id != self.job_id:
            raise RemoteProtocolError(
                "wrong_job",
                "SRV-5",
                f"message names job {msg.job_id!r}; this connection is bound to {self.job_id!r}",
                "jobId",
            )
        if msg.type.startswith("x-"):
            return _LIVENESS  # MSG-2
        seq = None if replay is False else msg.seq
        if seq is not None and seq <= self.last_seq:
            return _DUPLICATE
        if replay and seq is None and msg.type in SEQUENCED_TYPES:
            raise RemoteProtocolError("invalid_message", "REPLAY-1", "missing with replay", "seq")

        tolerated = None
        row = TRANSITIONS[self.state]
        if msg.type not in row and self.state is AttemptState.SPAWNED:
            tolerated, row = "LIFE-2", TRANSITIONS[AttemptState.RUNNING]
        if msg.type not in row:
            code = "duplicate_terminal" if msg.is_terminal else "out_of_order"
            raise RemoteProtocolError(
                code, "LIFE-4", f"{msg.type!r} after the terminal message", "type"
            )
        if msg.type == "started" and self.state is AttemptState.RUNNING:
            if seq is not None:
                raise RemoteProtocolError("out_of_order", "LIFE-1", "a second started", "type")
            return _RECONNECT

        following = row[msg.type]
        # A tolerated early message (LIFE-2) does not stand in for started:
        # the attempt stays spawned, so that the real started is recorded.
        if not (tolerated and following is AttemptState.RUNNING):
            self.state = following
        if seq is not None:
            self.last_seq = seq
        if msg.type not in SEQUENCED_TYPES:  # heartbeat, hello
            return Verdict("liveness", tolerated) if tolerated else _LIVENESS
        return Verdict("record", tolerated) if tolerated else _RECORD

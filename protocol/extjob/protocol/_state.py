"""The lifecycle of one attempt, as data (SPEC section 5.1).

Rule 1, after h11's ``_state.py``: everything that moves an attempt from one
state to another lives in :data:`TRANSITIONS`. The server, the conformance
harness and ``extjob validate`` all drive this one table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from ._errors import RemoteProtocolError
from ._messages import SEQUENCED_TYPES, Message


class AttemptState(enum.Enum):
    SPAWNED = "spawned"  # spawned, started not yet received
    RUNNING = "running"
    FINISHED = "finished"  # a terminal message was recorded

    # Members are singletons compared by identity, so identity hashing is
    # exact; Enum's own __hash__ is Python code, and receive() looks the
    # state up in TRANSITIONS for every message.
    __hash__ = object.__hash__


_LIVE = {"progress", "log", "heartbeat", "checkpoint", "hello"}

#: state -> message type -> next state. A type missing from a state's row is
#: not allowed there (see :meth:`Attempt.receive` for what happens instead).
TRANSITIONS: dict[AttemptState, dict[str, AttemptState]] = {
    AttemptState.SPAWNED: {"hello": AttemptState.SPAWNED, "started": AttemptState.RUNNING},
    AttemptState.RUNNING: {
        **dict.fromkeys(_LIVE, AttemptState.RUNNING),
        "started": AttemptState.RUNNING,  # LIFE-3: a v1 worker's reconnect
        "completed": AttemptState.FINISHED,
        "failed": AttemptState.FINISHED,
    },
    AttemptState.FINISHED: {"hello": AttemptState.FINISHED},
}

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
    """The receiving side's view of one attempt of one job.

    ``replay`` says whether the connection negotiated the replay extension:
    then every sequenced type must carry ``seq`` (REPLAY-1).
    """

    def __init__(
        self,
        job_id: str,
        last_seq: int = 0,
        state: AttemptState = AttemptState.SPAWNED,
        replay: bool = False,
    ):
        self.job_id = job_id
        self.last_seq = last_seq
        self.state = state
        self.replay = replay

    def receive(self, msg: Message) -> Verdict:
        if msg.job_id != self.job_id:
            raise RemoteProtocolError(
                "wrong_job",
                "SRV-5",
                f"message names job {msg.job_id!r}; this connection is bound to {self.job_id!r}",
                "jobId",
            )
        if msg.type.startswith("x-"):
            return _LIVENESS  # MSG-2
        if msg.seq is not None and msg.seq <= self.last_seq:
            return _DUPLICATE
        if self.replay and msg.seq is None and msg.type in SEQUENCED_TYPES:
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
            if msg.seq is not None:
                raise RemoteProtocolError("out_of_order", "LIFE-1", "a second started", "type")
            return _RECONNECT

        self.state = row[msg.type]
        if msg.seq is not None:
            self.last_seq = msg.seq
        if msg.type in ("heartbeat", "hello"):
            return Verdict("liveness", tolerated) if tolerated else _LIVENESS
        return Verdict("record", tolerated) if tolerated else _RECORD

"""What each worker message type is, in one table (SPEC sections 4, 5.1, 7.3).

Every other list of types in the core (which carry ``seq``, which end an
attempt, what the lifecycle table allows where) is derived from
:data:`KINDS`, so a new message type is one row here plus its schema.
"""

from __future__ import annotations

from typing import NamedTuple


class Kind(NamedTuple):
    """The facts about one worker message type."""

    sequenced: bool  #: carries ``seq`` under replay and is recorded (REPLAY-1, SRV-3)
    terminal: bool = False  #: ends the attempt (LIFE-4)
    starts: bool = False  #: moves a spawned attempt to running (LIFE-1)
    before_start: bool = False  #: allowed before ``started`` without tolerance (LIFE-1)
    after_terminal: bool = False  #: allowed after the terminal message (LIFE-4)


#: Worker message type -> its facts. ``protocol/tests`` checks that these are
#: exactly the types of ``schema/worker-message.schema.json``.
KINDS: dict[str, Kind] = {
    "hello": Kind(sequenced=False, before_start=True, after_terminal=True),
    "started": Kind(sequenced=True, starts=True),
    "progress": Kind(sequenced=True),
    "heartbeat": Kind(sequenced=False),
    "log": Kind(sequenced=True),
    "checkpoint": Kind(sequenced=True),
    "completed": Kind(sequenced=True, terminal=True),
    "failed": Kind(sequenced=True, terminal=True),
}

TERMINAL_TYPES = frozenset(t for t, k in KINDS.items() if k.terminal)
#: REPLAY-1: the types that carry ``seq`` when replay is in force.
SEQUENCED_TYPES = frozenset(t for t, k in KINDS.items() if k.sequenced)

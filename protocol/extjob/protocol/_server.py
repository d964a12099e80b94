"""The server's side of one attempt, sans I/O (after h11's ``Connection``).

A :class:`ServerAttempt` is everything a server decides about one attempt
of one job; a :class:`ServerConnection` is one of the attempt's connections
(a spool file is read as one more, SPOOL-3). Bytes go in with
:meth:`ServerConnection.receive_data`, which returns an :class:`Intake`:
the messages to record, the lines discarded and why, whether the
connection must be closed. The replies the server owes (welcome, ack, error,
cancel) pile up as bytes in :meth:`ServerConnection.data_to_send`. Nothing
here reads a clock: times are passed in (any monotonic clock, in seconds).

The store's transaction sits between receipt and acknowledgement
(REPLAY-2): the caller stores ``intake.messages``, then calls
:meth:`ServerAttempt.recorded` (which owes the ack) or, if the store
failed, :meth:`ServerAttempt.not_recorded` (which rolls the attempt back to
what is stored and names the connections to close, so that the worker
replays). Intakes are recorded in the order they were made.
"""

from __future__ import annotations

import enum
import json
import secrets
import time
from collections.abc import Collection, Mapping
from itertools import compress, repeat
from operator import attrgetter
from typing import Any, Literal, NamedTuple

from ._errors import LocalProtocolError, RemoteProtocolError
from ._features import FEATURES, negotiate
from ._framing import LineBuffer, OversizedLine, encode
from ._kinds import SEQUENCED_TYPES, TERMINAL_TYPES
from ._messages import Message, cancel, decode, decode_all, error, welcome
from ._state import Attempt, AttemptState
from ._timing import (
    DEFAULT_HEARTBEAT_TIMEOUT_MS,
    DEFAULT_MAX_LINE_BYTES,
    exit_grace_ms,
    heartbeat_interval_ms,
    stale_slack_ms,
)

#: STALE-3: after the server finds it was not running, how long it gives
#: itself to read what waited on its sockets before it looks at a silence again.
READ_FIRST_S = 0.05

#: AUTH-3: why a connection without hello is refused once a hello was accepted.
_AUTHENTICATED = "this attempt has an authenticated connection: one without hello may not write"

#: Informational ``error`` lines are dropped once this much output is queued
#: for a worker that does not read (CTRL-6).
ERROR_BACKLOG = 64 * 1024


class Binding(enum.Enum):
    """What a connection is, once its first valid line is known (AUTH-3)."""

    UNBOUND = "unbound"
    V1 = "v1"  # no hello: never written to (NEG-3)
    EXTENDED = "extended"  # an accepted hello: welcome, acks, errors, cancel
    REFUSED = "refused"  # AUTH-4/AUTH-5: closed, nothing after counts

    __hash__ = object.__hash__


_UNBOUND, _V1, _EXTENDED, _REFUSED = Binding.UNBOUND, Binding.V1, Binding.EXTENDED, Binding.REFUSED
_types_of = attrgetter("type")
_seqs_of = attrgetter("seq")
_new_tuple = tuple.__new__


class Rejection(NamedTuple):
    """A discarded line (SRV-6): why, and the line (None when oversized)."""

    error: RemoteProtocolError
    line: bytes | None


class Traced(NamedTuple):
    """One line as received, for a harness that records the wire."""

    line: bytes | OversizedLine
    message: Message | None
    error: RemoteProtocolError | None


class Intake:
    """What one read of a connection brought.

    ``messages``: to record, in order (new by REPLAY-5, allowed by the
    lifecycle). ``terminal``: the body of the terminal message among them.
    ``sequenced``: an ack is owed once they are recorded. ``reconnected``:
    this read showed a worker back after a failure or a restart.
    ``tolerated``: (rule, message) of deviations let through (LIFE-2).
    ``refused``: the connection was refused (AUTH-4/5): write what is owed,
    then close it. ``trace``: every line with its fate, when asked for.
    """

    # Read for every read of every connection (the server's hot path): only
    # what every intake has is set per instance; the rest are class defaults,
    # replaced on the instance when a read has them.
    rejected: list[Rejection] = []  # noqa: RUF012 (never mutated: replaced, see _reject)
    tolerated: list[tuple[str, Message]] = []  # noqa: RUF012
    trace: list[Traced] = []  # noqa: RUF012
    terminal: Mapping[str, Any] | None = None
    refused: RemoteProtocolError | None = None
    #: The hello accepted by this read, and how it bound the connection (AUTH-3).
    hello: Message | None = None
    bound: Binding | None = None
    sequenced = False
    reconnected = False
    _records = False  # messages to store, even once released
    _last_seq = 0
    _state = AttemptState.SPAWNED

    def __init__(self, connection: ServerConnection, epoch: int, size: int) -> None:
        self.connection = connection
        self.size = size  #: bytes read
        self.messages: list[Message] = []
        #: Every valid message of the job, heartbeats and duplicates included.
        self.received: list[Message] = []
        self._epoch = epoch

    def __bool__(self) -> bool:
        """Anything to store."""
        return self._records

    def release(self) -> None:
        """Let the messages go once the caller has taken what it stores and
        emits from them, before the store's commit: reads in flight then hold
        their batches only, not every decoded line (many busy connections read
        megabytes per loop iteration). What ``recorded`` needs stays. New
        lists, not cleared ones: a caller may keep the old (a wire view)."""
        self.messages = []
        self.received = []
        if self.tolerated:
            self.tolerated = []

    @property
    def last_seq(self) -> int:
        """The highest seq the store holds once these messages are in (0: none)."""
        return self._last_seq


class Silence(NamedTuple):
    """A look at the attempt's silence (STALE-1, STALE-2, START-1).

    ``action``: "stale" (emit ``job.stale``, once per silence), "kill"
    (terminate: the failure is ``heartbeat_timeout(silence_ms)``) or None.
    ``next_at``: when to look again (None: no watch, a terminal message is
    recorded).
    """

    action: Literal["stale", "kill"] | None
    silence_ms: int
    next_at: float | None


CancelStep = Literal["sent", "kill", "none"]


def _traced_only(line: bytes | OversizedLine) -> Traced:
    """A line that is recorded for the harness but not applied."""
    if isinstance(line, OversizedLine):
        return Traced(line, None, RemoteProtocolError("line_too_long", "LIMIT-1", "too long"))
    try:
        return Traced(line, decode(line), None)
    except RemoteProtocolError as exc:
        return Traced(line, None, exc)


class ServerAttempt:
    """The server's protocol state for one attempt of one job.

    ``token``: the attempt's secret (AUTH-1); a token of an earlier attempt
    is simply another token, so it is refused (AUTH-4). ``offered``: the
    extensions the server offers (NEG-1). ``recorded_seq``, ``state`` and
    ``terminal``: what the store holds (after a restart, ``adopted``).
    ``now``: the spawn or restart time: the silence before the first line
    counts (START-1, RECONNECT-5).
    """

    def __init__(
        self,
        job_id: str,
        token: str,
        *,
        now: float,
        offered: Collection[str] = FEATURES,
        heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        require_hello: bool = False,
        recorded_seq: int = 0,
        state: AttemptState | None = None,
        terminal: Mapping[str, Any] | None = None,
        adopted: bool = False,
    ) -> None:
        self.job_id = job_id
        self._token = token.encode()
        job = json.dumps(job_id, ensure_ascii=False).encode()
        self._ack_prefix = b'{"type":"ack","jobId":%s,"timestamp":' % job
        self.offered = frozenset(offered)
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms(heartbeat_timeout_ms)
        self.max_line_bytes = max_line_bytes
        self.require_hello = require_hello
        if state is None:
            if terminal is not None:
                state = AttemptState.FINISHED
            elif recorded_seq:
                state = AttemptState.RUNNING
            else:
                state = AttemptState.SPAWNED
        self.lifecycle = Attempt(job_id, recorded_seq, state)
        self._recorded = self.lifecycle.copy()
        self._epoch = 0
        self.terminal: Mapping[str, Any] | None = terminal
        self.adopted = adopted
        #: A hello was accepted: from now on every connection must begin with one.
        self.authenticated = False
        self.connections: list[ServerConnection] = []
        #: The newest open connection that negotiated control (CANCEL-1).
        self.control: ServerConnection | None = None
        self._bound = 0  # connections bound so far (spool files not counted)
        self.last_receipt = now
        self.stale = False
        # STALE-3: when the server asked to look again, and the time it was
        # itself not running during the silence since ``_credit_for``.
        self._look_at: float | None = None
        self._credit_for = now
        self._credit = 0.0
        self.cancel_reason: str | None = None
        #: A user asked to cancel (CANCEL-4), also during a timeout's cancel.
        self.cancel_requested = False

    @property
    def recorded_seq(self) -> int:
        """The highest seq the store holds for this attempt (CTRL-2's lastSeq)."""
        return self._recorded.last_seq

    def connect(self, *, trace: bool = False) -> ServerConnection:
        """A new connection of this attempt. ``trace``: keep every line in its intakes."""
        conn = ServerConnection(self, trace=trace)
        self.connections.append(conn)
        return conn

    # -- the store's transaction (REPLAY-2, REPLAY-5) -----------------------

    def is_current(self, intake: Intake) -> bool:
        """False for an intake made before a rollback: it must not be stored."""
        return intake._epoch == self._epoch

    def recorded(self, intake: Intake) -> None:
        """The store holds ``intake.messages``: owe the ack, keep the terminal."""
        if intake._epoch != self._epoch:
            raise LocalProtocolError("an intake from before a rollback was recorded")
        if intake._records:
            if intake._last_seq > self._recorded.last_seq:
                self._recorded.last_seq = intake._last_seq
            self._recorded.state = intake._state
        if intake.terminal is not None:
            self.terminal = intake.terminal
        conn = intake.connection
        if intake.sequenced and conn.replay and conn.open and self.recorded_seq:
            conn._out.append(self._ack_line(self.recorded_seq))

    def _ack_line(self, seq: int) -> bytes:
        """CTRL-3's ``ack`` line, as ``encode(ack(job_id, seq))`` makes it, made
        without the JSON encoder: one goes out for every read of a replay
        connection (the server's hot path). ``protocol/tests`` compares them."""
        return b'%s%d,"seq":%d}\n' % (self._ack_prefix, time.time_ns() // 1_000_000, seq)

    def not_recorded(self, intake: Intake) -> list[ServerConnection]:
        """The store failed: forget everything not stored, and return the open
        connections to close (the worker reconnects and replays, REPLAY-4)."""
        self.lifecycle = self._recorded.copy()
        self._epoch += 1
        return [conn for conn in self.connections if conn.open]

    # -- spool files (SPOOL-3) ---------------------------------------------

    def apply_spool(self, data: bytes, now: float) -> Intake | None:
        """Read a spool file like a connection that cannot be answered.

        Its first line must be a hello that passes AUTH-4 and has spool in
        force (NEG-2: so replay too, and REPLAY-5 drops what is already
        recorded); None means it does not (keep the file as rejected). Otherwise the intake is
        recorded like a connection's (``recorded`` / ``not_recorded``). A
        missing final newline is forgiven: the file was renamed into place
        whole (SPOOL-2), so its last line is complete.
        """
        conn = ServerConnection(self, spool=True)
        if data and not data.endswith(b"\n"):
            data += b"\n"
        intake = conn.receive_data(data, now)
        if "spool" not in conn.features:  # refused, or no spool in force (NEG-2)
            return None
        return intake

    # -- cancel and deadlines (CANCEL-1/2, STALE-1/2, START-1, EXIT-3) ------

    def cancel(self, reason: str, deadline_ms: int) -> CancelStep:
        """CANCEL-1: "sent" when a ``cancel`` is queued on the control connection
        (KILL-1 follows at the deadline, CANCEL-2), "kill" to terminate at once
        (no control), "none" when finished or already cancelling."""
        if reason == "requested":
            self.cancel_requested = True
        if self.terminal is not None or self.cancel_reason is not None:
            return "none"
        self.cancel_reason = reason
        conn = self.control
        if conn is None:
            return "kill"
        conn.send(cancel(self.job_id, reason, deadline_ms))
        return "sent"

    def check_silence(self, now: float) -> Silence:
        """STALE-1 once per silence, STALE-2 at twice the timeout; the time
        before the first line counts (START-1).

        STALE-3: a look later than STALE-1 allows after the time this asked
        for means the server itself was not running (stopped, paused,
        blocked). That time is not the worker's silence, and nothing is
        decided then: the answer is to look again shortly, once the server
        has read what waited on its sockets meanwhile."""
        if self._credit_for != self.last_receipt:  # a line since: a new silence
            self._credit_for, self._credit = self.last_receipt, 0.0
        late = 0.0 if self._look_at is None else now - self._look_at
        self._look_at = None
        timeout = self.heartbeat_timeout_ms / 1000
        if self.terminal is None and late > stale_slack_ms(self.heartbeat_timeout_ms) / 1000:
            self._credit += late
            self._look_at = now + READ_FIRST_S
            credited = now - self.last_receipt - self._credit
            return Silence(None, int(credited * 1000), self._look_at)
        silence = now - self.last_receipt - self._credit
        silence_ms = int(silence * 1000)
        if self.terminal is not None:
            return Silence(None, silence_ms, None)
        if silence >= 2 * timeout:
            return Silence("kill", silence_ms, None)
        action: Literal["stale"] | None = None
        if silence >= timeout and not self.stale:
            self.stale = True
            action = "stale"
        wait = 2 * timeout if self.stale else timeout
        self._look_at = self.last_receipt + self._credit + wait
        return Silence(action, silence_ms, self._look_at)

    def exit_deadline(self, now: float) -> float:
        """EXIT-3: when a worker still running after its recorded terminal
        message is terminated."""
        return now + exit_grace_ms(self.heartbeat_interval_ms) / 1000

    # -- used by ServerConnection ------------------------------------------

    def _check_token(self, token: Any) -> bool:
        return isinstance(token, str) and secrets.compare_digest(token.encode(), self._token)

    def _lost(self, conn: ServerConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        if self.control is conn:
            self.control = next(
                (c for c in reversed(self.connections) if "control" in c.features), None
            )


class ServerConnection:
    """One connection of an attempt (or its spool file): bytes in, intakes out.

    ``binding``, ``features`` (those in force, NEG-2) and ``replay`` say
    what the worker negotiated on it. Writing to a peer that sent no hello
    raises :class:`LocalProtocolError` (NEG-3).
    """

    def __init__(self, attempt: ServerAttempt, *, spool: bool = False, trace: bool = False):
        self.attempt = attempt
        self.binding = Binding.UNBOUND
        self.features: tuple[str, ...] = ()
        self.replay = False
        self.open = True
        self._buffer = LineBuffer(attempt.max_line_bytes)
        self._out: list[bytes] = []
        self._spool = spool
        self._trace = trace
        self._hello_first = False  # its first line was a hello: an auth error may be written
        self._reconnect_counted = False

    @property
    def extended(self) -> bool:
        return self.binding is Binding.EXTENDED

    @property
    def pending(self) -> int:
        """Bytes of a line received so far without its ``\\n``."""
        return self._buffer.pending

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes, now: float, backlog: int = 0) -> Intake:
        """Take one read's bytes. ``backlog``: bytes already queued for the
        worker and not yet taken (CTRL-6: informational errors are dropped
        above :data:`ERROR_BACKLOG`)."""
        attempt = self.attempt
        intake = Intake(self, attempt._epoch, len(data))
        receive = attempt.lifecycle.receive
        records = intake.messages
        received = intake.received
        trace: list[Traced] | None = [] if self._trace else None
        alive = False
        lines = self._buffer.feed(data)
        if len(lines) > 1 and (
            self.binding is _EXTENDED or (self.binding is _V1 and not attempt.authenticated)
        ):
            lines = self._receive_plain(lines, intake, trace)
        for line in lines:
            if self.binding is _REFUSED:  # AUTH-4: nothing after a refused line counts
                if trace is None:
                    break
                if isinstance(line, OversizedLine) or line.strip():
                    trace.append(_traced_only(line))
                continue
            if isinstance(line, OversizedLine):
                exc = RemoteProtocolError(
                    "line_too_long", "LIMIT-1", f"line of {line.size} bytes discarded"
                )
                self._reject(intake, exc, None, None, backlog)
                if trace is not None:
                    trace.append(Traced(line, None, exc))
                continue
            if not line.strip():
                continue  # FRAME-3
            try:
                message = decode(line)
            except RemoteProtocolError as exc:
                self._reject(intake, exc, line, None, backlog)
                if trace is not None:
                    trace.append(Traced(line, None, exc))
                continue
            if trace is not None:
                trace.append(Traced(line, message, None))
            if message.type == "hello" or self.binding is _UNBOUND:
                if self._bind(message, intake, backlog):
                    alive = True
                if message.type == "hello" or self.binding is not _V1:
                    continue
            elif self.binding is _V1 and attempt.authenticated:
                self._refuse(intake, "AUTH-3", _AUTHENTICATED)  # bound before the hello came
                continue
            try:
                verdict = receive(message, self.replay)
            except RemoteProtocolError as exc:
                if exc.code != "wrong_job":
                    alive = True
                self._reject(intake, exc, line, message.seq, backlog)
                continue
            received.append(message)
            if message.seq is not None:
                intake.sequenced = True
            action = verdict.action
            if action == "record":
                records.append(message)
                if message.type in TERMINAL_TYPES:
                    intake.terminal = message.body
            elif action == "reconnect":  # LIFE-3: a v1 worker is back
                self._count_reconnect(intake)
            if verdict.tolerated:
                if not intake.tolerated:
                    intake.tolerated = []
                intake.tolerated.append((verdict.tolerated, message))
        if trace is not None:
            intake.trace = trace
        if received:
            alive = True
        if alive and not self._spool:
            attempt.last_receipt = now  # SRV-1, at receipt (HB-3)
            attempt.stale = False
        if records:
            lifecycle = attempt.lifecycle
            intake._records = True
            intake._last_seq = lifecycle.last_seq
            intake._state = lifecycle.state
        return intake

    def _receive_plain(
        self, lines: list[bytes | OversizedLine], intake: Intake, trace: list[Traced] | None
    ) -> list[bytes | OversizedLine]:
        """The fast path of a read of many lines: take in one go those that are
        plain (valid ordinary messages, new, of the bound job of a running
        attempt: ``decode_all``, ``Attempt.receive_all``), all of them or all
        but the last (a read often ends with a terminal message); return the
        lines left for the way one by one, which decides every other case
        and says why a line is bad."""
        messages = decode_all(lines)  # type: ignore[arg-type]  # None if any is oversized
        if messages is None:
            return lines
        receive_all = self.attempt.lifecycle.receive_all
        if receive_all(messages, self.replay):
            rest: list[bytes | OversizedLine] = []
        elif receive_all(messages[:-1], self.replay):
            messages.pop()
            rest = lines[-1:]
        else:
            return lines
        intake.received.extend(messages)
        if SEQUENCED_TYPES.issuperset(map(_types_of, messages)):
            intake.messages.extend(messages)
        else:  # heartbeats: a sign of life only
            recorded = map(SEQUENCED_TYPES.__contains__, map(_types_of, messages))
            intake.messages.extend(compress(messages, recorded))
        if self.replay:  # receive_all: every sequenced message has its seq
            intake.sequenced = bool(intake.messages)
        else:
            intake.sequenced = list(map(_seqs_of, messages)).count(None) < len(messages)
        if trace is not None:
            trace += map(_new_tuple, repeat(Traced), zip(lines, messages, repeat(None)))
        return rest

    def close_input(self) -> RemoteProtocolError | None:
        """The worker closed its side: a line left without its ``\\n`` is not
        a line (FRAME-1); this says so, for the log."""
        pending = self._buffer.pending
        if pending and self.binding is not Binding.REFUSED:
            return RemoteProtocolError(
                "invalid_json", "FRAME-1", f"the connection ended inside a line ({pending} bytes)"
            )
        return None

    def connection_lost(self) -> None:
        self.open = False
        self.attempt._lost(self)

    # -- output ----------------------------------------------------------------

    def send(self, message: Mapping[str, Any]) -> None:
        """Queue one server message; only a peer that sent hello is written to."""
        if self.binding is not Binding.EXTENDED:
            raise LocalProtocolError(
                f"NEG-3: cannot write {message.get('type')!r} to a {self.binding.value} connection"
            )
        self._queue(message)

    def data_to_send(self) -> bytes:
        """Everything owed to the worker since the last call."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def overwhelmed(self, backlog: int) -> bool:
        """CTRL-6: close a worker that lets more than maxLineBytes of our output pile up."""
        return backlog > self.attempt.max_line_bytes

    def _queue(self, message: Mapping[str, Any]) -> None:
        if self.open and not self._spool:
            self._out.append(encode(message))

    # -- binding (AUTH-2..5, NEG-2/3) --------------------------------------

    def _bind(self, message: Message, intake: Intake, backlog: int) -> bool:
        """Bind on the first valid line, or refuse it; True if it is a sign of life."""
        attempt = self.attempt
        hello = message.type == "hello"
        if self.binding is Binding.UNBOUND:
            self._hello_first = hello
        if message.job_id != attempt.job_id:
            detail = f"this socket belongs to job {attempt.job_id!r}"
            if hello:
                self._refuse(intake, "AUTH-4", detail)
            else:
                exc = RemoteProtocolError("wrong_job", "SRV-5", detail, "jobId")
                self._reject(intake, exc, None, message.seq, backlog)
            return False
        if not hello:
            if self._spool:
                self._refuse(intake, "SPOOL-3", "a spool file must begin with hello (SPOOL-2)")
            elif attempt.require_hello:
                self._refuse(intake, "AUTH-5", "this server requires hello")
            elif attempt.authenticated:
                self._refuse(intake, "AUTH-3", _AUTHENTICATED)
            else:
                self.binding = intake.bound = Binding.V1
                if attempt.adopted and not attempt._bound:
                    self._count_reconnect(intake)  # the first connection after a restart
                attempt._bound += 1
            return self.binding is Binding.V1
        if self.binding is not Binding.UNBOUND:
            exc = RemoteProtocolError("out_of_order", "AUTH-2", "a second hello")
            self._reject(intake, exc, None, None, backlog)
            return True
        if not attempt._check_token(message.body.get("token")):
            self._refuse(intake, "AUTH-4", "wrong token for this attempt")
            return False
        self.binding = intake.bound = Binding.EXTENDED
        intake.hello = message
        self.features = negotiate(attempt.offered, message.body.get("features") or ())
        self.replay = "replay" in self.features
        if not self._spool:
            attempt.authenticated = True
            if "control" in self.features:
                attempt.control = self
            if attempt._bound or attempt.adopted:
                self._count_reconnect(intake)
            attempt._bound += 1
        self._queue(
            welcome(
                attempt.job_id,
                list(self.features),
                attempt.recorded_seq,
                attempt.heartbeat_interval_ms,
            )
        )
        return True

    def _count_reconnect(self, intake: Intake) -> None:
        if not self._reconnect_counted and not self._spool:
            self._reconnect_counted = intake.reconnected = True

    def _refuse(self, intake: Intake, requirement: str, detail: str) -> None:
        """AUTH-4: answer a hello with ``error`` and close; the job is untouched.
        A peer that sent no hello is only closed (NEG-3)."""
        self.binding = Binding.REFUSED
        intake.refused = RemoteProtocolError("auth", requirement, detail)
        if self._hello_first:
            self._queue(error(self.attempt.job_id, "auth", detail, requirement))

    def _reject(
        self,
        intake: Intake,
        exc: RemoteProtocolError,
        line: bytes | None,
        seq: int | None,
        backlog: int,
    ) -> None:
        """SRV-6: discard a line with its reason; tell an extended peer (CTRL-5)."""
        if not intake.rejected:
            intake.rejected = []
        intake.rejected.append(Rejection(exc, line))
        if self.binding is Binding.EXTENDED and backlog < ERROR_BACKLOG:
            self._queue(error(self.attempt.job_id, exc.code, str(exc), exc.requirement, seq))

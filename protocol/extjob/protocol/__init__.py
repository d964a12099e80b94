"""The external job protocol core: pure, no I/O (SPEC: ``protocol/SPEC.md``).

Theory of operation, after h11 and wsproto: bytes come in, messages go out;
objects go in, bytes come out. Nothing here opens a socket, starts a timer or
reads a clock for a deadline; the reference server, the conformance harness
and ``extjob validate`` drive these same pieces, so each rule lives in one
place.

- :class:`LineBuffer` splits a byte stream into NDJSON lines in bounded
  memory (FRAME-1, FRAME-4, LIMIT-1); :func:`encode` makes a line.
- :func:`decode` turns a line into a schema-valid :class:`Message` or raises
  :class:`RemoteProtocolError` with a CTRL-5 code and a SPEC requirement id;
  :func:`decode_all` takes a read of plain lines in a few native calls.
  The JSON Schemas in ``schema/`` are the single source of truth: nothing
  here restates a field rule; :func:`problems` explains a bad message.
- :class:`Attempt` applies the lifecycle table of SPEC 5.1 (in ``_state``)
  and the replay rules, and says what to do with each message
  (:class:`Verdict`).
- :class:`StreamChecker` applies the stream rules of SPEC section 9.
- :class:`ServerAttempt` is the server's side of one attempt, after h11's
  ``Connection``: each :class:`ServerConnection` takes bytes and returns an
  :class:`Intake` (what to record, what was discarded and why), and owes
  the replies (welcome, ack, error, cancel) as bytes. It decides binding,
  the hello checks, negotiation (:func:`negotiate`), REPLAY-5 around the
  store's transaction, silence and cancel, and reads spool files like a
  connection. The reference server, the conformance harness's fake server
  and the wrappers' test peers all drive it.
- :func:`outcome` decides how an attempt ends (EXIT-1, CANCEL-4, TIMEOUT-1,
  CKPT-4); :func:`build_payload` and :func:`payload_environment` make what a
  worker is given (PAY-2/3, ENV-1). :data:`KINDS` is the one table of what
  each message type is; the other type lists derive from it.
- The timing rules and defaults of SPEC sections 6 and 12 are functions and
  constants; the builders :func:`welcome`, :func:`ack`, :func:`cancel` and
  :func:`error` make server -> worker messages.
"""

import importlib
from typing import TYPE_CHECKING

from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from ._features import FEATURES, negotiate
from ._framing import LineBuffer, OversizedLine, encode
from ._kinds import KINDS, SEQUENCED_TYPES, TERMINAL_TYPES, Kind
from ._messages import (
    Message,
    ack,
    cancel,
    decode,
    decode_all,
    decode_bodies,
    decode_object,
    error,
    message_of,
    parse_line,
    problems,
    validate_payload,
    welcome,
)
from ._schemas import SCHEMA_DIR, Problem, message_types
from ._state import TRANSITIONS, Attempt, AttemptState, Verdict
from ._stream import OrdinaryRun, StreamChecker, ordinary_run, runs
from ._timing import (
    DEFAULT_CANCEL_DEADLINE_MS,
    DEFAULT_HEARTBEAT_TIMEOUT_MS,
    DEFAULT_KILL_GRACE_MS,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_RETRY_BACKOFF_MS,
    DEFAULT_RECONNECT_WINDOW_MS,
    DEFAULT_RETRY_BACKOFF_MS,
    EXIT_AFTER_TERMINAL_MS,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    V1_HEARTBEAT_INTERVAL_MS,
    exit_grace_ms,
    heartbeat_interval_ms,
    reconnect_delays_ms,
    retry_delay_ms,
    stale_slack_ms,
    terminal_ack_timeout_ms,
)

if TYPE_CHECKING:
    from ._outcome import (
        Exit,
        Outcome,
        Retry,
        describe_exit,
        heartbeat_timeout,
        outcome,
        timed_out,
    )
    from ._payload import (
        ENV_NAMES,
        ENV_PREFIXES,
        ENV_TCP_PORT,
        ENV_VARS,
        Extensions,
        build_payload,
        payload_environment,
    )
    from ._server import Binding, Intake, ServerAttempt, ServerConnection, Silence

#: What only a server or the harness uses, imported when first asked for
#: (PEP 562), so that ``extjob validate`` starts without it.
_LAZY = {
    **dict.fromkeys(
        ("Exit", "Outcome", "Retry", "describe_exit", "heartbeat_timeout", "outcome", "timed_out"),
        "._outcome",
    ),
    **dict.fromkeys(
        ("ENV_NAMES", "ENV_PREFIXES", "ENV_TCP_PORT", "ENV_VARS", "Extensions", "build_payload"),
        "._payload",
    ),
    "payload_environment": "._payload",
    **dict.fromkeys(
        ("Binding", "Intake", "ServerAttempt", "ServerConnection", "Silence"), "._server"
    ),
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_CANCEL_DEADLINE_MS",
    "DEFAULT_HEARTBEAT_TIMEOUT_MS",
    "DEFAULT_KILL_GRACE_MS",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_MAX_RETRY_BACKOFF_MS",
    "DEFAULT_RECONNECT_WINDOW_MS",
    "DEFAULT_RETRY_BACKOFF_MS",
    "ENV_NAMES",
    "ENV_PREFIXES",
    "ENV_TCP_PORT",
    "ENV_VARS",
    "EXIT_AFTER_TERMINAL_MS",
    "FEATURES",
    "KINDS",
    "MAX_PAYLOAD_BYTES",
    "PROTOCOL_VERSION",
    "SCHEMA_DIR",
    "SEQUENCED_TYPES",
    "TERMINAL_TYPES",
    "TRANSITIONS",
    "V1_HEARTBEAT_INTERVAL_MS",
    "Attempt",
    "AttemptState",
    "Binding",
    "Exit",
    "Extensions",
    "Intake",
    "Kind",
    "LineBuffer",
    "LocalProtocolError",
    "Message",
    "OrdinaryRun",
    "Outcome",
    "OversizedLine",
    "Problem",
    "ProtocolError",
    "RemoteProtocolError",
    "Retry",
    "ServerAttempt",
    "ServerConnection",
    "Silence",
    "StreamChecker",
    "Verdict",
    "ack",
    "build_payload",
    "cancel",
    "decode",
    "decode_all",
    "decode_bodies",
    "decode_object",
    "describe_exit",
    "encode",
    "error",
    "exit_grace_ms",
    "heartbeat_interval_ms",
    "heartbeat_timeout",
    "message_of",
    "message_types",
    "negotiate",
    "ordinary_run",
    "outcome",
    "parse_line",
    "payload_environment",
    "problems",
    "reconnect_delays_ms",
    "retry_delay_ms",
    "runs",
    "stale_slack_ms",
    "terminal_ack_timeout_ms",
    "timed_out",
    "validate_payload",
    "welcome",
]

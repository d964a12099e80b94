"""The worker side of the external job protocol (protocol/SPEC.md), standard library only.

A job server spawns this process, writes one JSON payload line to its standard
input and listens on a Unix socket (or ``tcp://host:port``).  This module reads
the payload, connects, reports the job's life as NDJSON lines and keeps the
connection alive::

    from extjob_worker import Job, run_job

    def resize(job: Job) -> dict:
        for i, name in enumerate(job.data["images"]):
            job.progress(100 * i / len(job.data["images"]), f"resizing {name}")
        return {"resized": len(job.data["images"])}

    run_job(resize)

Theory of operation
-------------------
Job code (any number of threads) never touches the socket.  Each call builds
its line, takes a sequence number and a timestamp under one lock and appends
the line to an *outbox*.  One background thread, the *link*, owns the socket:
it connects (with the RECONNECT-1 backoff), presents the token (``hello``,
then waits for ``welcome``), writes the outbox in order, reads everything the
server sends (``welcome``, ``ack``, ``cancel``, ``error``, and ignores the
rest), sends heartbeats on its own clock whatever the job code is doing, and
when the connection fails it keeps every unacknowledged line for replay.  A
signal handler only pokes the link through a socket pair, so SIGTERM becomes a
cancel request without running code in a signal context.

Which extensions are used is decided by the payload alone (NEG-2, NEG-3):
with no ``features`` this is a plain v1 worker that never waits for the
server; with ``auth`` and a token it says ``hello`` and uses what was offered.
"""

from __future__ import annotations

import fcntl
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping

# typing costs a job 2-3 ms at start, and the names below are only annotations.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import FrameType, TracebackType
    from typing import IO, Any, NoReturn

__all__ = [
    "IMPLEMENTED_FEATURES",
    "LEVELS",
    "ConnectError",
    "Job",
    "JobFinishedError",
    "MessageTooLarge",
    "Payload",
    "PayloadError",
    "parse_payload",
    "read_payload",
    "run_job",
    "run_job_async",
]
__version__ = "0.1.0"

IMPLEMENTED_FEATURES = ("auth", "replay", "control", "spool", "checkpoint")
#: NEG-2: a spool file is applied by seq, so spool is usable only with replay.
_NEEDS = {"spool": ("replay",)}
LEVELS = ("debug", "info", "warn", "error")

V1_HEARTBEAT_MS = 5000  # HB-2: the interval when the payload names none
DEFAULT_RECONNECT_WINDOW_MS = 60_000  # RECONNECT-3
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024  # LIMIT-1
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # LIMIT-2
MAX_SERVER_LINE_BYTES = 16 * 1024 * 1024  # LIMIT-3 asks for 1 MiB; longer lines are skipped
RECONNECT_FIRST_S = 0.1  # RECONNECT-1: 100 ms doubling ...
RECONNECT_MAX_S = 2.0  # ... capped at 2000 ms
RECONNECT_JITTER = 0.2  # RECONNECT-1: 0-20 % added to each wait
BUFFER_MAX_MESSAGES = 10_000  # REPLAY-6: hold at least 10,000 messages ...
BUFFER_MAX_BYTES = 64 * 1024 * 1024  # ... or 16 MiB
_CHUNK_BYTES = 256 * 1024  # how many queued lines one send() may carry
_SEQUENCED = frozenset({"started", "progress", "log", "checkpoint", "completed", "failed"})
_NEVER_DROPPED = frozenset({"started", "checkpoint", "completed", "failed"})  # REPLAY-6


class PayloadError(ValueError):
    """The payload is missing or malformed (PAY-6); the text names what is wrong."""


class MessageTooLarge(ValueError):
    """A line would exceed the server's ``maxLineBytes`` (LIMIT-1); ``size`` is its length."""

    def __init__(self, kind: str, size: int, limit: int) -> None:
        super().__init__(f"{kind} line of {size} bytes exceeds maxLineBytes {limit} (LIMIT-1)")
        self.size = size


class JobFinishedError(RuntimeError):
    """The job already sent its terminal message; nothing may follow it (LIFE-4)."""


class ConnectError(OSError):
    """The server could not be reached within the reconnect window before the job started."""


# --------------------------------------------------------------------------- payload


class Payload:
    """The job as the server described it on standard input (SPEC.md section 2).

    A plain class: a dataclass or a NamedTuple would cost a job 3-5 ms at start
    (importing dataclasses or typing).
    """

    __slots__ = (
        "attempt",
        "checkpoint",
        "data",
        "features",
        "has_checkpoint",
        "heartbeat_interval_ms",
        "job_id",
        "max_attempts",
        "max_line_bytes",
        "name",
        "reconnect_window_ms",
        "socket_path",
        "spool_path",
        "token",
    )

    def __init__(
        self,
        job_id: str,
        name: str,
        data: Any,
        socket_path: str,
        *,
        features: frozenset[str] = frozenset(),
        token: str | None = None,
        heartbeat_interval_ms: int | None = None,
        reconnect_window_ms: int = DEFAULT_RECONNECT_WINDOW_MS,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        attempt: int = 1,
        max_attempts: int | None = None,
        spool_path: str | None = None,
        has_checkpoint: bool = False,
        checkpoint: Any = None,
    ) -> None:
        self.job_id = job_id
        self.name = name
        self.data = data
        self.socket_path = socket_path
        self.features = features
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.reconnect_window_ms = reconnect_window_ms
        self.max_line_bytes = max_line_bytes
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.spool_path = spool_path
        self.has_checkpoint = has_checkpoint
        self.checkpoint = checkpoint

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"Payload({fields})"


_ENV_NAMES = {
    "jobId": ("EXTJOB_JOB_ID", "DONKEYLABS_JOB_ID"),
    "name": ("EXTJOB_JOB_NAME", "DONKEYLABS_JOB_NAME"),
    "socketPath": ("EXTJOB_SOCKET_PATH", "DONKEYLABS_SOCKET_PATH"),
}
# (field, minimum) of the optional integer fields (PAY-3)
_INT_FIELDS = (
    ("heartbeatIntervalMs", 10),
    ("heartbeatTimeoutMs", 30),
    ("reconnectWindowMs", 0),
    ("maxLineBytes", 65536),
    ("attempt", 1),
    ("maxAttempts", 1),
)


def read_payload(
    stdin: IO[bytes] | None = None, environ: Mapping[str, str] | None = None
) -> Payload:
    """Read the payload line from ``stdin`` (default: the process's) and parse it (PAY-1, ENV-2)."""
    if stdin is None:
        stdin = sys.stdin.buffer if sys.stdin is not None else None
    raw = b""
    if stdin is not None:
        try:
            raw = stdin.readline(MAX_PAYLOAD_BYTES + 2)  # the line, its "\r\n", and no more
        except (OSError, ValueError) as exc:
            raise PayloadError(f"cannot read the payload from standard input: {exc}") from None
        if len(raw.rstrip(b"\r\n")) > MAX_PAYLOAD_BYTES:
            raise PayloadError(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes (PAY-4, LIMIT-2)")
    return parse_payload(raw, os.environ if environ is None else environ)


def parse_payload(raw: bytes | str | Mapping[str, Any], environ: Mapping[str, str]) -> Payload:
    """Parse one payload; fill ``jobId``, ``name``, ``socketPath`` from ``environ`` (ENV-2).

    Raises :class:`PayloadError` with a one-line reason (PAY-6).
    """
    fields: Mapping[str, Any]
    if isinstance(raw, Mapping):
        fields = raw
    else:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        if text.strip():
            try:
                decoded = json.loads(text)
            except ValueError as exc:
                raise PayloadError(f"payload is not valid JSON ({exc}) (PAY-6)") from None
            if not isinstance(decoded, dict):
                raise PayloadError(
                    f"payload is a JSON {type(decoded).__name__}, not an object (PAY-6)"
                )
            fields = decoded
        else:
            fields = {}
    required = {key: _required_string(fields, key, environ) for key in _ENV_NAMES}
    socket_path = required["socketPath"]
    if socket_path.startswith("tcp://"):
        _parse_tcp(socket_path)  # a bad address is a malformed payload, not a connect failure
    for key, minimum in _INT_FIELDS:
        _optional_int(fields, key, minimum)
    if "protocolVersion" in fields and fields["protocolVersion"] != 1:
        raise PayloadError(
            f"protocolVersion {fields['protocolVersion']!r} is not supported (NEG-1)"
        )
    features = fields.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise PayloadError("features must be an array of strings (NEG-1)")
    token = fields.get("token")
    if token is not None:
        if not isinstance(token, str) or not 16 <= len(token) <= 256:
            raise PayloadError("token must be a string of 16 to 256 characters (AUTH-1)")
        if "protocolVersion" not in fields or "features" not in fields:
            raise PayloadError("a payload with a token needs protocolVersion and features (PAY-3)")
    spool_path = fields.get("spoolPath")
    if spool_path is not None and (not isinstance(spool_path, str) or not spool_path):
        raise PayloadError("spoolPath must be a non-empty string (SPOOL-1)")
    return Payload(
        job_id=required["jobId"],
        name=required["name"],
        data=fields.get("data", {}),
        socket_path=socket_path,
        features=frozenset(features),
        token=token,
        heartbeat_interval_ms=_optional_int(fields, "heartbeatIntervalMs", 10),
        reconnect_window_ms=_optional_int(fields, "reconnectWindowMs", 0)
        or (0 if "reconnectWindowMs" in fields else DEFAULT_RECONNECT_WINDOW_MS),
        max_line_bytes=_optional_int(fields, "maxLineBytes", 65536) or DEFAULT_MAX_LINE_BYTES,
        attempt=_optional_int(fields, "attempt", 1) or 1,
        max_attempts=_optional_int(fields, "maxAttempts", 1),
        spool_path=spool_path,
        has_checkpoint=fields.get("checkpoint") is not None,  # CKPT-2: null is none
        checkpoint=fields.get("checkpoint"),
    )


def _required_string(fields: Mapping[str, Any], key: str, environ: Mapping[str, str]) -> str:
    if key in fields:
        value = fields[key]
        if not isinstance(value, str) or not value:
            raise PayloadError(f"{key} must be a non-empty string (PAY-2)")
        if key != "socketPath" and len(value) > 256:
            raise PayloadError(f"{key} is longer than 256 characters (PAY-2)")
        return value
    names = _ENV_NAMES[key]
    for name in names:
        if environ.get(name):
            return environ[name]
    if key == "socketPath" and environ.get("DONKEYLABS_TCP_PORT"):
        return f"tcp://127.0.0.1:{environ['DONKEYLABS_TCP_PORT']}"
    raise PayloadError(f"payload has no {key} and {' and '.join(names)} are not set (PAY-2, ENV-2)")


def _optional_int(fields: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PayloadError(f"{key} must be an integer >= {minimum}, not {value!r} (PAY-3)")
    return value


def _parse_tcp(socket_path: str) -> tuple[str, int]:
    rest = socket_path[len("tcp://") :]
    host, sep, port = rest.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PayloadError(f"socketPath {socket_path!r} is not tcp://HOST:PORT (TRANS-1)")
    return host, int(port)


# --------------------------------------------------------------------------- encoding

# Built once: json.dumps with options builds a new encoder for every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_encode_string = json.encoder.encode_basestring  # what _ENCODER uses for a str (C)


def _encode_json(value: Any) -> str:
    """Compact JSON that is always valid UTF-8 and never holds a raw control character.

    ``json`` escapes control characters; lone surrogates (which Python strings
    may hold) become U+FFFD and split surrogate pairs are joined (FRAME-2).
    """
    try:
        text = _ENCODER.encode(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (FRAME-2: NaN and Infinity are not JSON)") from None
    if not _has_surrogate(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point, which UTF-8 cannot encode.

    Not a regular expression: compiling one costs every job 0.2 ms at start,
    and an ASCII text (most lines) is known to have none without a scan."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _progress_body(percent: float, message: str | None) -> str:
    """The fields of a progress without data, as _encode_json would write them, faster."""
    number = float.__repr__(percent) if isinstance(percent, float) else int.__repr__(percent)
    if message is None:
        return f'{{"percent":{number}}}'
    if _has_surrogate(message):
        return _encode_json({"percent": percent, "message": message})
    return f'{{"percent":{number},"message":{_encode_string(message)}}}'


def _error_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _stack_text(exc: BaseException) -> str:
    import traceback  # loaded when a job fails, not at every start

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _note(text: str) -> None:
    """One diagnostic line on stderr; a closed or broken stderr is not our problem (WRAP-5)."""
    try:
        sys.stderr.write(f"extjob_worker: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


# --------------------------------------------------------------------------- the link


class _Entry:
    """One line in the outbox. ``buffered`` lines count against the buffer and are replayed."""

    __slots__ = ("buffered", "dropped", "fields", "kind", "line", "seq", "timestamp", "written")

    def __init__(
        self, kind: str, line: bytes, timestamp: int, seq: int | None = None, fields: Any = None
    ) -> None:
        self.kind = kind
        self.line = line
        self.timestamp = timestamp
        self.seq = seq
        self.fields = fields  # kept for progress only: coalescing rebuilds the line
        self.written = False
        self.dropped = False
        self.buffered = kind not in (
            "hello",
            "heartbeat",
            "restarted",
        )  # an attribute: read twice per line


class _Link:
    """Owns the connection: one thread that connects, writes, reads, heartbeats, replays."""

    def __init__(
        self,
        payload: Payload,
        on_cancel: Callable[[str, int | None], None],
        buffer_messages: int,
        buffer_bytes: int,
    ) -> None:
        self._payload = payload
        self._on_cancel = on_cancel
        self._buffer_messages = buffer_messages
        self._buffer_bytes = buffer_bytes
        offered = payload.features
        extended = "auth" in offered and payload.token is not None
        usable = [f for f in IMPLEMENTED_FEATURES if f in offered] if extended else []
        self.features = tuple(f for f in usable if all(n in usable for n in _NEEDS.get(f, ())))
        self.extended = extended
        self.replay = "replay" in self.features
        self._job_id_json = _encode_json(payload.job_id)
        self._interval = (payload.heartbeat_interval_ms or V1_HEARTBEAT_MS) / 1000
        self._window = payload.reconnect_window_ms / 1000
        self._line_limit = payload.max_line_bytes + 1  # with its newline

        _fill_stdio()
        # The hot paths (submit, _write) take the mutex directly: the Condition's own
        # __enter__ is a Python call more per message.
        self._mutex = threading.RLock()
        self._cond = threading.Condition(self._mutex)
        # Everything below is guarded by _cond.
        self._seq = 0
        self._last_timestamp = 0
        self._pending: deque[_Entry] = deque()  # not yet written on this connection
        self._inflight: deque[_Entry] = deque()  # written, waiting for an ack (replay only)
        self._count = 0
        self._bytes = 0
        self._dropped_logs = 0
        self._last_progress: _Entry | None = None
        self._drop_notice: _Entry | None = None
        self._ready = False  # connected, and welcomed when extended
        self._started_written = False
        self.terminal: _Entry | None = None
        self.done = False  # terminal delivered (acked, or written to a v1 peer)
        self.spooled = False
        self.gave_up = False
        self._stop = False

        # Owned by the link thread alone.
        self._sock: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._chunk = b""
        self._chunk_pos = 0
        self._chunk_entries: deque[tuple[_Entry, int]] = deque()
        self._rbuf = bytearray()
        self._skipping = False
        self._welcome_deadline: float | None = None
        self._ack_deadline: float | None = None
        self._last_heartbeat = 0.0
        self._heartbeat_queued = False
        self._delay = 0.0
        self._next_attempt = 0.0
        self._down_since = 0.0
        self._attempts = 0  # connection attempts since the connection went down
        self._events = 0

        self._waker = _Waker()
        self._waker_r = self._waker.reader
        self._selector.register(self._waker_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name="extjob-link", daemon=True)

    # ---- used by job threads

    def start(self) -> None:
        """Connect (retrying for up to ``reconnectWindowMs``) and send ``started`` (LIFE-1);
        return once it is written, so that the job code runs after it."""
        if self.replay:
            self.submit("started", {})  # sequenced, so it is replayed like the rest
        self._down_since = time.monotonic()
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._started_written or self.gave_up)
            if not self._started_written:
                raise ConnectError(
                    f"cannot connect to {self._payload.socket_path} "
                    f"within {self._payload.reconnect_window_ms} ms (RECONNECT-3)"
                )

    def submit(self, kind: str, fields: Mapping[str, Any], body: str | None = None) -> None:
        """Queue one message; blocks only while connected with a full buffer (REPLAY-6).

        ``body`` is ``fields`` encoded, when the caller has it already."""
        if body is None:
            body = _encode_json(fields)
        with self._mutex:
            if self.terminal is not None:
                raise JobFinishedError(
                    f"cannot send {kind}: the job already sent {self.terminal.kind}"
                )
            if kind not in _NEVER_DROPPED and self._ready and self._full():
                self._cond.wait_for(lambda: not (self._ready and self._full()))
                if self.terminal is not None:
                    raise JobFinishedError(f"cannot send {kind}: the job already finished")
            if not self._ready:
                if kind == "progress":
                    coalesced = self._coalesce(fields)
                    if coalesced is not fields:
                        fields, body = coalesced, _encode_json(coalesced)
                if kind not in _NEVER_DROPPED and self._full():
                    self._drop_oldest_logs()
            if kind == "progress":
                entry = self._last_progress = self._build(kind, body, fields)
            else:
                entry = self._build(kind, body)
                if kind in ("completed", "failed"):
                    self.terminal = entry
            self._append(entry)
            wake = self._waker.request()
        if wake:  # one byte per burst: the link takes everything queued when it wakes
            self._waker.send()

    @property
    def ready(self) -> bool:
        with self._cond:
            return self._ready

    def wait_done(self, timeout: float | None = None) -> bool:
        """Wait until the terminal message was delivered or spooled (EXIT-3)."""
        with self._cond:
            finished = self._cond.wait_for(lambda: self.done or self.gave_up, timeout)
        if finished:
            self._thread.join(1.0)
        return finished

    def close(self) -> None:
        with self._cond:
            self._stop = True
        self._waker.send()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(1.0)

    def signal_cancel(self) -> None:
        """Async-signal-safe: hand SIGTERM to the link thread (CANCEL-3)."""
        self._waker.send(b"T")

    # ---- outbox bookkeeping (callers hold _cond)

    def _stamp(self) -> int:
        # TIME-1: never decrease, even when the wall clock steps back.
        self._last_timestamp = max(int(time.time() * 1000), self._last_timestamp)
        return self._last_timestamp

    def _build(self, kind: str, body: str, fields: Any = None) -> _Entry:
        timestamp = self._stamp()
        seq = None
        head = f'{{"type":"{kind}","jobId":{self._job_id_json},"timestamp":{timestamp}'
        if self.replay and kind in _SEQUENCED:
            seq = self._seq + 1
            head = f'{head},"seq":{seq}'
        line = (f"{head}}}\n" if body == "{}" else f"{head},{body[1:]}\n").encode()
        if len(line) > self._line_limit:
            limit = self._payload.max_line_bytes
            raise MessageTooLarge(kind, len(line) - 1, limit)
        if seq is not None:
            self._seq = seq
        return _Entry(kind, line, timestamp, seq, fields)

    def _append(self, entry: _Entry) -> None:
        self._pending.append(entry)
        self._count += 1
        self._bytes += len(entry.line)

    def _release(self, entry: _Entry, *, notify: bool = True) -> None:
        if entry.buffered and not entry.dropped:
            self._count -= 1
            self._bytes -= len(entry.line)
        if notify:
            self._cond.notify_all()

    def _full(self) -> bool:
        return self._count >= self._buffer_messages or self._bytes >= self._buffer_bytes

    def _discard(self, entry: _Entry) -> None:
        """Drop a buffered entry where it stands; the writer skips it (its seq becomes a gap)."""
        self._release(entry)
        entry.dropped = True
        entry.line = b""

    def _unsent(self, entry: _Entry | None) -> bool:
        return entry is not None and not entry.written and not entry.dropped

    def _coalesce(self, fields: Mapping[str, Any]) -> Mapping[str, Any]:
        """REPLAY-6: while disconnected keep only the latest unsent progress.

        A progress without ``message`` means the previous message still stands
        (MSG-4), so the message of the one dropped is carried over.
        """
        previous = self._last_progress
        if previous is None or not self._unsent(previous):
            return fields
        self._discard(previous)
        if fields.get("message") is None and previous.fields.get("message") is not None:
            return {**fields, "message": previous.fields["message"]}
        return fields

    def _drop_oldest_logs(self) -> None:
        """REPLAY-6: make room by dropping the oldest tenth of the buffered logs, and say so
        in one ``warn`` log that replaces the previous notice while that is unsent."""
        notice = self._drop_notice
        logs = [e for e in self._pending if e.kind == "log" and not e.dropped and e is not notice]
        if not logs:
            return
        for entry in logs[: max(1, len(logs) // 10)]:
            self._discard(entry)
            self._dropped_logs += 1
        if notice is not None and self._unsent(notice):
            self._discard(notice)
        dropped = self._dropped_logs
        fields = {
            "level": "warn",
            "message": f"dropped {dropped} log messages while disconnected (REPLAY-6)",
            "data": {"dropped": dropped},
        }
        self._drop_notice = self._build("log", _encode_json(fields))
        self._append(self._drop_notice)

    # ---- the link thread

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if self._stop or self.done:
                        break
                if self._sock is None:
                    if not self._connect_step():
                        break
                else:
                    self._service()
        except Exception as exc:  # a bug here must not take the job code with it
            _note(f"link thread failed: {_error_text(exc)}")
            with self._cond:
                self.gave_up = True
                self._cond.notify_all()
        finally:
            self._disconnect()
            self._selector.close()
            self._waker.close()

    def _connect_step(self) -> bool:
        """One reconnect attempt, or wait for the next; False once RECONNECT-3 gives up."""
        now = time.monotonic()
        with self._cond:
            may_give_up = self.terminal is not None or not self._started_written
        if may_give_up and self._attempts and now - self._down_since >= self._window:
            self._give_up()
            return False
        if now < self._next_attempt:
            self._wait(self._next_attempt - now)
            return True
        self._attempts += 1
        try:
            sock = self._open()
        except OSError:
            self._retry_later(first=False)
            return True
        sock = _above_stdio(sock)
        sock.setblocking(False)
        self._sock = sock
        self._selector.register(sock, selectors.EVENT_READ)
        self._events = selectors.EVENT_READ
        if self.extended:
            with self._cond:
                entry = self._hello()
            self._chunk = entry.line
            self._chunk_entries.append((entry, len(entry.line)))
            self._welcome_deadline = time.monotonic() + max(2.0, self._interval)  # AUTH-2
        else:
            self._became_ready(None)
        return True

    def _hello(self) -> _Entry:
        """AUTH-2: the line that presents the token; first on every connection and spool file."""
        fields = {
            "token": self._payload.token,
            "protocolVersion": 1,
            "features": list(self.features),
            "pid": os.getpid(),
        }
        return self._build("hello", _encode_json(fields))

    def _retry_later(self, *, first: bool) -> None:
        """RECONNECT-1: wait 100 ms, then twice the previous wait up to 2000 ms, plus jitter."""
        import random  # only a worker that lost its server pays for it

        if first or not self._delay:
            self._delay = RECONNECT_FIRST_S
        else:
            self._delay = min(RECONNECT_MAX_S, self._delay * 2)
        jitter = 1 + random.uniform(0, RECONNECT_JITTER)
        self._next_attempt = time.monotonic() + self._delay * jitter

    def _open(self) -> socket.socket:
        path = self._payload.socket_path
        timeout = max(2.0, self._interval)
        if path.startswith("tcp://"):
            host, port = _parse_tcp(path)
            sock = socket.create_connection((host, port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    def _became_ready(self, welcome: Mapping[str, Any] | None) -> None:
        with self._cond:
            if welcome is not None:
                last_seq = welcome["lastSeq"]
                pending = self._pending
                while pending and pending[0].seq is not None and pending[0].seq <= last_seq:
                    entry = pending.popleft()  # REPLAY-4: the server has it
                    self._started_written |= entry.kind == "started"
                    self._release(entry)
                terminal = self.terminal
                if terminal is not None and terminal.seq is not None and terminal.seq <= last_seq:
                    self._finish()  # the result was recorded; only its ack was lost
                self._interval = welcome["heartbeatIntervalMs"] / 1000
            if not self.replay and not (self.extended and self._started_written):
                # LIFE-3: a v1 worker (re)introduces itself, dated no later than what follows it.
                first = next((e for e in self._pending if not e.dropped), None)
                timestamp = first.timestamp if first is not None else self._stamp()
                head = f'{{"type":"started","jobId":{self._job_id_json},"timestamp":{timestamp}}}\n'
                self._pending.appendleft(_Entry("restarted", head.encode(), timestamp))
            self._ready = True
            self._cond.notify_all()
        self._welcome_deadline = None
        self._delay = 0.0
        self._next_attempt = 0.0

    def _service(self) -> None:
        """One round: wait for the socket, the waker or a deadline, then act on each."""
        sock = self._sock
        assert sock is not None  # _run only calls this while connected
        with self._cond:
            self._queue_heartbeat_if_due()
            if not self._chunk and self._ready:
                self._fill_chunk()
            want_write = bool(self._chunk)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
        if events != self._events:
            self._selector.modify(sock, events)
            self._events = events
        for key, mask in self._selector.select(self._next_deadline()):
            if key.fileobj is self._waker_r:
                self._drain_waker()
                continue
            if mask & selectors.EVENT_READ and self._sock is sock:
                self._read()
            if mask & selectors.EVENT_WRITE and self._sock is sock:
                self._write()
        now = time.monotonic()
        if self._sock is not None and self._welcome_deadline and now >= self._welcome_deadline:
            self._lost("no welcome from the server (AUTH-2)")
        if self._sock is not None and self._ack_deadline and now >= self._ack_deadline:
            self._lost("the terminal message was not acknowledged (REPLAY-3)")

    def _next_deadline(self) -> float | None:
        deadlines = [d for d in (self._welcome_deadline, self._ack_deadline) if d is not None]
        with self._cond:
            if self._heartbeat_eligible():
                deadlines.append(self._last_heartbeat + self._interval)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _heartbeat_eligible(self) -> bool:
        # HB-2: from started to the terminal message, and never buffered.
        return (
            self._ready
            and self._started_written
            and self.terminal is None
            and not self._heartbeat_queued
        )

    def _queue_heartbeat_if_due(self) -> None:
        now = time.monotonic()
        if self._heartbeat_eligible() and now >= self._last_heartbeat + self._interval:
            self._pending.append(self._build("heartbeat", "{}"))
            self._heartbeat_queued = True
            self._last_heartbeat = now

    def _fill_chunk(self) -> None:
        lines = []
        size = 0
        while self._pending and size < _CHUNK_BYTES:
            entry = self._pending.popleft()
            if entry.dropped:
                continue
            lines.append(entry.line)
            size += len(entry.line)
            self._chunk_entries.append((entry, size))
        self._chunk = b"".join(lines)
        self._chunk_pos = 0

    def _write(self) -> None:
        assert self._sock is not None
        try:
            sent = self._sock.send(
                memoryview(self._chunk)[self._chunk_pos : self._chunk_pos + (1 << 20)]
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # EPIPE, ECONNRESET: RECONNECT-2, never fatal
            self._lost(f"write failed: {exc}")
            return
        self._chunk_pos += sent
        entries = self._chunk_entries
        with self._mutex:
            while entries and entries[0][1] <= self._chunk_pos:
                self._written(entries.popleft()[0])
            self._cond.notify_all()  # once for all the room made (REPLAY-6 waits for it)
            if self._chunk_pos >= len(self._chunk):
                self._chunk = b""
                self._chunk_pos = 0

    def _written(self, entry: _Entry) -> None:
        entry.written = True
        if entry.kind == "heartbeat":
            self._heartbeat_queued = False
        elif entry.kind in ("started", "restarted"):
            if not self._started_written:
                self._last_heartbeat = time.monotonic()
            self._started_written = True
            self._cond.notify_all()  # start() returns: the job code may run now
        if self.replay and entry.seq is not None:
            self._inflight.append(entry)
        elif entry.buffered:
            self._release(entry, notify=False)  # _write notifies once per send
        if entry is self.terminal:
            if self.replay:
                self._ack_deadline = time.monotonic() + max(2.0, self._interval)
            else:
                self._finish()

    def _read(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(f"read failed: {exc}")
            return
        if not data:
            self._lost("the server closed the connection")
            return
        self._rbuf += data
        while self._sock is not None:
            end = self._rbuf.find(b"\n")
            if end < 0:
                if len(self._rbuf) > MAX_SERVER_LINE_BYTES:  # FRAME-4: skip it in constant memory
                    self._rbuf.clear()
                    self._skipping = True
                return
            line = bytes(self._rbuf[:end])
            del self._rbuf[: end + 1]
            if self._skipping:
                self._skipping = False
                continue
            self._handle(line)

    def _handle(self, line: bytes) -> None:
        """Act on one server line; anything unknown or malformed is ignored (CTRL-6)."""
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "welcome" and self._welcome_deadline is not None:
            last_seq = message.get("lastSeq")
            interval = message.get("heartbeatIntervalMs")
            if _is_int(last_seq, 0) and _is_int(interval, 10):
                self._became_ready(message)
        elif kind == "ack" and _is_int(message.get("seq"), 1):
            self._ack(message["seq"])
        elif kind == "cancel":
            reason = message.get("reason")
            deadline = message.get("deadlineMs")
            self._on_cancel(
                reason if isinstance(reason, str) and reason else "requested",
                deadline if _is_int(deadline, 0) else None,
            )
        elif kind == "error":
            code = message.get("code")
            _note(f"server error {code}: {message.get('message')}")
            if code == "auth":  # AUTH-4: the server closes; retry as after any failure
                self._lost("the server refused the token (AUTH-4)")

    def _ack(self, seq: int) -> None:
        with self._cond:
            while self._inflight and (self._inflight[0].seq or 0) <= seq:
                self._release(self._inflight.popleft())
            if (
                self.terminal is not None
                and self.terminal.seq is not None
                and self.terminal.seq <= seq
            ):
                self._finish()

    def _finish(self) -> None:
        self.done = True
        self._ack_deadline = None
        self._cond.notify_all()

    def _drain_waker(self) -> None:
        data = self._waker.drain(self._cond)
        if b"T" in data:
            self._on_cancel("SIGTERM", None)

    def _wait(self, seconds: float) -> None:
        for key, _ in self._selector.select(seconds):
            if key.fileobj is self._waker_r:
                self._drain_waker()

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._selector.unregister(self._sock)
            self._sock.close()
            self._sock = None

    def _lost(self, reason: str) -> None:
        """RECONNECT-1: keep everything not yet acknowledged, in order, and retry."""
        self._disconnect()
        self._rbuf.clear()
        self._skipping = False
        self._welcome_deadline = None
        self._ack_deadline = None
        with self._cond:
            was_ready = self._ready
            self._ready = False
            unsent = [entry for entry, _ in self._chunk_entries]
            everything = (*self._inflight, *unsent, *self._pending)
            kept = [e for e in everything if e.buffered and not e.dropped]
            self._pending = deque(kept)
            self._inflight.clear()
            self._chunk_entries.clear()
            self._chunk = b""
            self._chunk_pos = 0
            self._heartbeat_queued = False
            self._cond.notify_all()
        if was_ready:
            self._down_since = time.monotonic()
            self._attempts = 0
            _note(f"connection lost ({reason}); reconnecting")
        self._retry_later(first=was_ready)

    def _give_up(self) -> None:
        """RECONNECT-3: the server stayed away; spool the result if we may (SPOOL-2)."""
        with self._cond:
            if self.terminal is not None and "spool" in self.features and self._payload.spool_path:
                lines = [self._hello().line]
                lines += [e.line for e in self._pending if e.buffered and not e.dropped]
                self.spooled = _write_spool(self._payload.spool_path, lines)
            self.gave_up = True
            self._cond.notify_all()


class _Waker:
    """Wakes the link thread with one byte per burst of submitted messages.

    ``request`` (under the link's lock) says whether the submitter must send a
    byte: only when none is on its way. ``drain`` consumes the bytes *first*
    and clears the flag *after*, under the same lock: a message submitted in
    between saw the flag still set and sent nothing, but it is already in the
    outbox, which the link reads after ``drain``. Clearing first would let
    that message's byte be swallowed by the read, leaving the flag set with no
    byte on its way: no submitter would wake the link again, and it would
    sleep until its next heartbeat (the bug that held 150,000 progress calls
    to one burst per heartbeat interval).
    """

    def __init__(self) -> None:
        self.reader, self._writer = (_above_stdio(s) for s in socket.socketpair())
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending = False  # a wake byte is on its way to the link (guarded by the lock)

    def request(self) -> bool:
        """Called under the link's lock for each submitted message."""
        if self._pending:
            return False
        self._pending = True
        return True

    def send(self, byte: bytes = b"w") -> None:
        """Async-signal-safe; a full pipe means the link is already awake."""
        try:  # noqa: SIM105 (contextlib.suppress: an import at every job's start)
            self._writer.send(byte)
        except OSError:
            pass

    def drain(self, lock: threading.Condition) -> bytes:
        try:
            data = self._recv(4096)
        except OSError:
            data = b""
        with lock:
            self._pending = False
        return data

    def _recv(self, size: int) -> bytes:
        return self.reader.recv(size)

    def close(self) -> None:
        self.reader.close()
        self._writer.close()


def _fill_stdio() -> None:
    """Open /dev/null on closed descriptors 0-2, so that no socket of ours lands there
    and job code that prints to a closed stdout cannot write into the protocol (WRAP-5)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _release_stdio() -> None:
    """Flush stdout and stderr at the job's end; one whose flush fails (a pipe nobody
    reads) is pointed at /dev/null, so the interpreter's own flush at exit cannot turn
    a finished job's status into 120 (WRAP-5)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, stream.fileno())
                os.close(null)
            except (OSError, ValueError, AttributeError):
                pass


def _above_stdio(sock: socket.socket) -> socket.socket:
    """Move a socket off descriptors 0-2: if job code closed stdout, a later print()
    must fail, not write into the protocol stream (WRAP-5)."""
    if sock.fileno() > 2:
        return sock
    fd = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, 3)
    moved = socket.socket(sock.family, sock.type, fileno=fd)
    sock.close()
    return moved


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _write_spool(path: str, lines: Iterable[bytes]) -> bool:
    """SPOOL-2: write ``path + ".tmp"``, flush it to disk, rename: never a partial file."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.writelines(lines)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        _note(f"cannot write the spool file {path}: {exc}")
        return False
    return True


# --------------------------------------------------------------------------- the job API


class Job:
    """What job code sees of its job (WRAP-1). Every method is safe from any thread (WRAP-4).

    Use it through :func:`run_job`, :func:`run_job_async`, or as a context
    manager: ``with Job.from_environment() as job: ...``.
    """

    def __init__(
        self,
        payload: Payload,
        *,
        buffer_messages: int = BUFFER_MAX_MESSAGES,
        buffer_bytes: int = BUFFER_MAX_BYTES,
    ) -> None:
        self.payload = payload
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._cancel_reason: str | None = None
        self._cancel_deadline_ms: int | None = None
        self._cancel_callbacks: list[Callable[[str], object]] = []
        self._checkpoint = payload.checkpoint
        self._has_checkpoint = payload.has_checkpoint
        self._link = _Link(payload, self._request_cancel, buffer_messages, buffer_bytes)
        self._previous_sigterm: Any = None
        self._started = False

    @classmethod
    def from_environment(
        cls, stdin: IO[bytes] | None = None, environ: Mapping[str, str] | None = None
    ) -> Job:
        """Read the payload; if it is missing or malformed, exit 2 with one stderr line (PAY-6)."""
        try:
            return cls(read_payload(stdin, environ))
        except PayloadError as exc:
            _note(str(exc))
            raise SystemExit(2) from None

    # ---- what the server told us

    @property
    def job_id(self) -> str:
        return self.payload.job_id

    @property
    def name(self) -> str:
        return self.payload.name

    @property
    def data(self) -> Any:
        return self.payload.data

    @property
    def attempt(self) -> int:
        return self.payload.attempt

    @property
    def max_attempts(self) -> int | None:
        return self.payload.max_attempts

    @property
    def features(self) -> tuple[str, ...]:
        """The extensions in use: those the payload offers and this module implements (NEG-2)."""
        return self._link.features

    @property
    def has_checkpoint(self) -> bool:
        """Whether there is a checkpoint: from an earlier attempt (CKPT-2) or saved by this one."""
        with self._lock:
            return self._has_checkpoint

    @property
    def checkpoint_data(self) -> Any:
        """The last checkpoint (None when there is none; see :attr:`has_checkpoint`)."""
        with self._lock:
            return self._checkpoint

    @property
    def connected(self) -> bool:
        """Whether the link to the server is up (and welcomed); messages are buffered otherwise."""
        return self._link.ready

    @property
    def finished(self) -> bool:
        """True once ``complete`` or ``fail`` was called."""
        return self._link.terminal is not None

    @property
    def exit_status(self) -> int:
        """EXIT-2: 0 after ``completed``, 1 after ``failed`` (or with no terminal message)."""
        terminal = self._link.terminal
        return 0 if terminal is not None and terminal.kind == "completed" else 1

    # ---- lifecycle

    def start(self, *, handle_sigterm: bool = True) -> None:
        """Connect, present the token, send ``started``; from now on heartbeats flow (HB-2).

        With ``handle_sigterm`` (and on the main thread) SIGTERM becomes a cancel
        request instead of killing the process (CANCEL-3).
        """
        if self._started:
            raise RuntimeError("the job was already started")
        self._started = True
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            # Before started goes out: a server may cancel as soon as it sees it.
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self._link.start()
        except ConnectError:
            self._restore_sigterm()
            raise

    def close(self, timeout: float | None = None) -> int:
        """Wait until the terminal message is acknowledged, or spooled (RECONNECT-3).

        Returns the exit status the process should end with (EXIT-2).
        """
        if self._link.terminal is None:
            raise RuntimeError("close() before complete() or fail()")
        self._link.wait_done(timeout)
        self._link.close()
        if self._link.gave_up and not self._link.done:
            where = f"spooled to {self.payload.spool_path}" if self._link.spooled else "lost"
            _note(
                f"the server stayed away for {self.payload.reconnect_window_ms} ms; result {where}"
            )
        self._restore_sigterm()
        _release_stdio()
        return self.exit_status

    def __enter__(self) -> Job:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """An exception fails the job; a block that did not finish it completes it with None."""
        if not self.finished:
            if exc is None:
                self.complete(None)
            else:
                self.fail(exc)
        status = self.close()
        if status and exc is None:
            raise SystemExit(status)  # EXIT-2: a failed job never exits 0

    # ---- reporting

    def progress(self, percent: float, /, message: str | None = None, **data: Any) -> None:
        """Report ``percent`` (0-100), an optional message and extra data (MSG-4)."""
        if isinstance(percent, bool) or not isinstance(percent, (int, float)):
            raise TypeError(f"percent must be a number, not {type(percent).__name__}")
        if not 0 <= percent <= 100:  # also refuses NaN
            raise ValueError(f"percent must be between 0 and 100, not {percent} (MSG-4)")
        fields: dict[str, Any] = {"percent": percent}
        if message is not None:
            fields["message"] = message = str(message)
        if data:
            fields["data"] = data
            self._link.submit("progress", fields)
        else:
            self._link.submit("progress", fields, _progress_body(percent, message))

    def log(self, level: str, message: str, /, **data: Any) -> None:
        """Log ``message`` at ``level`` (debug, info, warn, error) with extra data (MSG-6)."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r} (MSG-6)")
        fields: dict[str, Any] = {"level": level, "message": str(message)}
        if data:
            fields["data"] = data
        self._link.submit("log", fields)

    def debug(self, message: str, /, **data: Any) -> None:
        self.log("debug", message, **data)

    def info(self, message: str, /, **data: Any) -> None:
        self.log("info", message, **data)

    def warn(self, message: str, /, **data: Any) -> None:
        self.log("warn", message, **data)

    def error(self, message: str, /, **data: Any) -> None:
        self.log("error", message, **data)

    def checkpoint(self, data: Any) -> bool:
        """Save ``data`` as the job's checkpoint (CKPT-1).

        Returns whether the server stores it: without the ``checkpoint``
        extension it is only kept for :attr:`checkpoint_data`.
        """
        sent = "checkpoint" in self.features
        if sent:
            self._link.submit("checkpoint", {"data": data})
        with self._lock:
            self._checkpoint = data
            self._has_checkpoint = True
        return sent

    def complete(self, result: Any = None) -> None:
        """Finish the job with ``result`` (MSG-7).

        A result too large for one line fails the job instead (LIMIT-1).
        """
        try:
            self._link.submit("completed", {"result": result})
        except MessageTooLarge as exc:
            self.fail(f"result too large: {exc.size} bytes", retryable=False)

    def fail(
        self, error: str | BaseException, stack: str | None = None, *, retryable: bool = True
    ) -> None:
        """Fail the job with ``error`` and ``stack`` (MSG-8); an exception brings its own stack."""
        if isinstance(error, BaseException):
            if stack is None:
                stack = _stack_text(error)
            error = _error_text(error)
        fields: dict[str, Any] = {"error": str(error) or "failed"}
        if stack is not None:
            fields["stack"] = stack[-(self.payload.max_line_bytes // 2) :]
        if not retryable:
            fields["retryable"] = False
        try:
            self._link.submit("failed", fields)
        except MessageTooLarge:  # a huge error text: keep what fits
            fields["error"] = fields["error"][: self.payload.max_line_bytes // 8]
            fields.pop("stack", None)
            self._link.submit("failed", fields)

    # ---- cancel (CANCEL-3)

    @property
    def cancel_requested(self) -> bool:
        """Whether the server (or SIGTERM) asked the job to stop. The job code decides how."""
        return self._cancelled.is_set()

    @property
    def cancel_reason(self) -> str | None:
        """``requested``, ``timeout``, ``shutdown``, ``SIGTERM``, ... or None."""
        with self._lock:
            return self._cancel_reason

    @property
    def cancel_deadline_ms(self) -> int | None:
        """How long the server waits for the terminal message after the cancel (CANCEL-2)."""
        with self._lock:
            return self._cancel_deadline_ms

    def wait_for_cancel(self, timeout: float | None = None) -> bool:
        """Block until a cancel is requested or ``timeout`` seconds pass; True if cancelled."""
        return self._cancelled.wait(timeout)

    async def wait_for_cancel_async(self) -> str:
        """Await a cancel request without blocking the event loop; returns its reason."""
        import asyncio  # only async job code pays for it: a third of a sync worker's start-up

        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()

        def resolve(reason: str) -> None:
            def settle() -> None:
                if not future.done():
                    future.set_result(reason)

            loop.call_soon_threadsafe(settle)

        self.on_cancel(resolve)
        return await future

    def on_cancel(self, callback: Callable[[str], object]) -> None:
        """Call ``callback(reason)`` once a cancel is requested (at once if it already was).

        Callbacks run on a helper thread, never on the one that reads the socket.
        """
        with self._lock:
            if self._cancel_reason is None:
                self._cancel_callbacks.append(callback)
                return
            reason = self._cancel_reason
        _call_quietly(callback, reason)

    def _request_cancel(self, reason: str, deadline_ms: int | None) -> None:
        with self._lock:
            if self._cancel_reason is not None:
                return
            self._cancel_reason = reason
            self._cancel_deadline_ms = deadline_ms
            callbacks, self._cancel_callbacks = self._cancel_callbacks, []
        self._cancelled.set()
        if callbacks:
            threading.Thread(
                target=_call_all_quietly,
                args=(callbacks, reason),
                name="extjob-cancel",
                daemon=True,
            ).start()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._link.signal_cancel()

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None


def _call_all_quietly(callbacks: list[Callable[[str], object]], reason: str) -> None:
    for callback in callbacks:
        _call_quietly(callback, reason)


def _call_quietly(callback: Callable[[str], object], reason: str) -> None:
    try:
        callback(reason)
    except Exception as exc:
        _note(f"cancel callback failed: {_error_text(exc)}")


# --------------------------------------------------------------------------- runners


def run_job(
    handler: Callable[[Job], Any],
    *,
    stdin: IO[bytes] | None = None,
    environ: Mapping[str, str] | None = None,
) -> NoReturn:
    """Run ``handler(job)`` as this process's job and exit (WRAP-2, EXIT-2).

    The return value completes the job; an exception fails it with its text
    and stack.  Exits 0 after ``completed``, 1 after ``failed``, 2 on a bad
    payload, once the terminal message is acknowledged (EXIT-3).
    """
    job = _started_job(stdin, environ)
    try:
        result = handler(job)
        if not job.finished:
            job.complete(result)
    except BaseException as exc:
        _fail_from(job, exc)
    sys.exit(job.close())


async def run_job_async(
    handler: Callable[[Job], Any],
    *,
    stdin: IO[bytes] | None = None,
    environ: Mapping[str, str] | None = None,
) -> NoReturn:
    """Like :func:`run_job` for an ``async def`` handler; connecting and the final
    wait happen on a worker thread, so the event loop never blocks on the socket.
    """
    import asyncio  # already loaded by whoever runs this coroutine; not at module level

    job = await asyncio.get_running_loop().run_in_executor(None, _started_job, stdin, environ)
    try:
        result = handler(job)
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        if not job.finished:
            job.complete(result)
    except BaseException as exc:
        _fail_from(job, exc)
    sys.exit(await asyncio.get_running_loop().run_in_executor(None, job.close))


def _started_job(stdin: IO[bytes] | None, environ: Mapping[str, str] | None) -> Job:
    job = Job.from_environment(stdin, environ)
    try:
        job.start()
    except ConnectError as exc:
        _note(str(exc))
        raise SystemExit(1) from None
    return job


def _fail_from(job: Job, exc: BaseException) -> None:
    if job.finished:
        _note(f"exception after the terminal message: {_error_text(exc)}")
        return
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        job.complete(None)  # sys.exit(0) in job code: done, as the original server sees it
    elif isinstance(exc, SystemExit):
        job.fail(f"job code exited with status {exc.code}")
    else:
        job.fail(exc)

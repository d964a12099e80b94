#!/usr/bin/env python3
"""A fixture worker written from SPEC.md alone, without any wrapper.

It implements the whole protocol (v1 core, auth, replay, control, spool,
checkpoint) in one file of plain Python, so that the conformance suite can be
tested before, and independently of, the wrappers. ``--break RULE`` makes it
break exactly one rule: it is the suite's mutation test. The suite's own tests
check that every such worker is caught by the right requirement id (see
BREAKS and ``conformance/tests/test_broken_workers.py``).

    python reference_worker.py [--break RULE]   (payload on stdin, SPEC 2)

Breaks near a bound (late heartbeats, lingering, a slow ack timeout) scale
with EXTJOB_CONFORMANCE_TIME_FACTOR as the suite's bounds do, so that they
stay just outside them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

IMPLEMENTED = ("auth", "replay", "control", "spool", "checkpoint")
NEEDS = {"replay": ("auth",), "control": ("auth",), "spool": ("auth", "replay")}
NEEDS |= {"checkpoint": ("auth",), "auth": ()}
KNOWN_PAYLOAD = {
    "jobId", "name", "data", "socketPath", "protocolVersion", "features",
    "heartbeatIntervalMs", "heartbeatTimeoutMs", "reconnectWindowMs", "maxLineBytes",
    "token", "attempt", "maxAttempts", "spoolPath", "checkpoint",
}  # fmt: skip
BUFFER_MESSAGES = 10_000  # REPLAY-6
FACTOR = float(os.environ.get("EXTJOB_CONFORMANCE_TIME_FACTOR") or 1)
CANCEL_SEEN = "cancel requested"  # FIX-2 cancel

BREAKS = {
    # timing
    "no-heartbeat": "never sends heartbeats (HB-2)",
    "late-heartbeat": "heartbeats at 2.5 times the interval (HB-2)",
    "eager-heartbeat": "heartbeats at a fifth of the interval (HB-2, a SHOULD: non-strict)",
    "conn-per-message": "v1: one connection per message, no heartbeats, like the original bash",
    "linger": "stays 1.8 s after its terminal message was acknowledged (EXIT-3)",
    "slow-start": "waits 6 s before it connects (START-1)",
    "stamp-at-creation": "v1: queued messages keep the time they were made (TIME-1)",
    # the payload and the environment
    "no-env": "ignores the environment fallback (ENV-2)",
    "donkeylabs-first": "reads DONKEYLABS_* before EXTJOB_* (ENV-2)",
    "env-only-when-empty": "uses the environment only when stdin is empty (ENV-2)",
    "strict-payload": "refuses a payload with fields it does not know (PAY-5)",
    "connect-on-bad-payload": "connects and completes although the payload is bad (PAY-6)",
    "array-payload-as-empty": "a payload that is not an object counts as empty (PAY-6)",
    "unix-only": "cannot connect to tcp:// addresses (TRANS-1)",
    # messages and framing
    "heartbeat-first": "a heartbeat before started, like the original Python wrapper (LIFE-1)",
    "second-started": "with replay, a second started with a new seq (LIFE-1)",
    "missing-field": "progress without percent (MSG-4)",
    "wrong-job-id": "messages name another job (MSG-1)",
    "job-id-changes": "messages after started name another job (STREAM-1)",
    "seconds-timestamp": "timestamps in seconds, not milliseconds (MSG-1)",
    "bad-level": "log levels in capitals (MSG-6)",
    "result-dropped": "completed without its result (MSG-7)",
    "empty-error": "failed with an empty error (MSG-8)",
    "unknown-type": "a message of a type the spec does not define (MSG-10)",
    "after-terminal": "a log after completed (LIFE-4, STREAM-3)",
    "bad-escaping": "escapes only backslash, quote and newline, like the original bash (FRAME-2)",
    "raw-surrogate": "sends lone surrogates as \\ud800 escapes (FRAME-2)",
    "interleave": "lets a heartbeat land inside another line (WRAP-4, seen as FRAME-1)",
    "strict-lf": "drops server lines that end in \\r\\n (FRAME-1)",
    "crash-on-garbage": "dies on a server line that is not JSON (FRAME-3)",
    "seq-on-some": "with replay, only logs carry seq (STREAM-6)",
    "no-size-check": "sends a completed line longer than maxLineBytes (LIMIT-1)",
    "long-failed": "sends a failed line longer than maxLineBytes (LIMIT-1)",
    "small-line-buffer": "skips server lines over 64 KiB (LIMIT-3)",
    # the fixture and the process
    "exit-0-after-fail": "exits 0 after failed (EXIT-2)",
    "stdout-noise": "prints on standard output (FIX-3)",
    "no-default-scenario": "a payload without scenario fails (FIX-1)",
    "crash-wrong-code": "the crash scenario exits 1, not with its code (FIX-2)",
    "fragile-stderr": "a note on standard error that kills it when stderr is broken (WRAP-5)",
    # reconnecting
    "no-reconnect": "gives up when the connection drops (RECONNECT-1)",
    "hammer": "retries every 5 ms (RECONNECT-1)",
    "fixed-2s": "retries every 2 s (RECONNECT-1)",
    "reset-on-connect": "starts the waits over on every connect, welcomed or not (RECONNECT-1)",
    "sigpipe": "dies of SIGPIPE when it writes to a dropped connection (RECONNECT-2)",
    "window-while-running": "gives up after reconnectWindowMs, the job code running (RECONNECT-3)",
    "never-give-up": "keeps retrying after the job code ended (RECONNECT-3)",
    "no-started-again": "a v1 reconnect without started (LIFE-3)",
    "run-without-connection": "runs the job code when the first connection fails (RECONNECT-6)",
    "give-up-at-once": "exits after the first failed connect (RECONNECT-6)",
    # negotiation and auth
    "hello-to-v1": "sends hello although the payload offers nothing (NEG-3)",
    "echo-features": "names every offered feature in hello (NEG-2)",
    "spool-without-replay": "uses spool when replay is not offered (NEG-2)",
    "reject-unknown-feature": "refuses a payload that offers a feature it does not know (NEG-1)",
    "no-hello": "extended payload, but no hello (AUTH-2)",
    "wrong-pid": "hello names its parent's pid (AUTH-2)",
    "no-wait-welcome": "sends started right after hello, before welcome (AUTH-2)",
    "wait-welcome-forever": "waits for a welcome that never comes (AUTH-2)",
    "ignore-auth": "keeps trying after auth errors, forever (AUTH-4)",
    "silent-auth": "says nothing about an auth error (AUTH-4, a SHOULD: non-strict)",
    # replay
    "no-seq": "negotiates replay but sends no seq (REPLAY-1)",
    "no-replay": "does not resend unacknowledged messages after a reconnect (REPLAY-4)",
    "replay-covered": "resends what the welcome's lastSeq covers (REPLAY-4)",
    "replay-changed": "replays with new timestamps (REPLAY-4)",
    "no-ack-timeout": "waits forever for the terminal ack (REPLAY-3)",
    "slow-ack-timeout": "waits 3.5 s for the terminal ack (REPLAY-3)",
    "no-ack-wait": "exits without waiting for the terminal ack (REPLAY-3)",
    "drop-while-connected": "drops the oldest logs when full, even while connected (REPLAY-6)",
    "silent-drop": "drops logs in an outage without saying how many (REPLAY-6)",
    "small-buffer": "blocks the job code at 1,000 messages (REPLAY-6, a SHOULD: non-strict)",
    # control
    "ignore-cancel": "never tells the job code about cancel (CANCEL-3)",
    "wrapper-ends-job": "ends the job itself on cancel, the job code unaware (CANCEL-3)",
    "sigterm-dies": "dies of SIGTERM (CANCEL-3, a SHOULD: non-strict)",
    "slow-cancel": "tells the job code about cancel 4.5 s late (CANCEL-2, a SHOULD)",
    "stop-reading": "stops reading server lines after welcome (CTRL-6)",
    "crash-on-unknown-type": "dies on a server message of unknown type (CTRL-6)",
    # spool and checkpoint
    "no-spool": "exits without spooling when the server is gone (SPOOL-2)",
    "spool-terminal-only": "spools hello and the terminal message only (SPOOL-2)",
    "spool-readable": "spools to a file others can read (SPOOL-2)",
    "spool-no-token": "spools a hello without the token (SPOOL-2)",
    "no-checkpoint": "checkpoint() sends nothing (CKPT-1)",
    "not-retryable": "the checkpoint scenario's failure is not retryable (CKPT-4)",
    "lose-checkpoint": "ignores the payload's checkpoint (CKPT-2)",
    "null-checkpoint-is-one": "takes checkpoint: null for a checkpoint (CKPT-2)",
}


def escape_badly(text: str) -> str:
    """The original bash wrapper's escaping: tabs and controls go through raw."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def fix_surrogates(value: Any) -> Any:
    """FRAME-2: a lone surrogate becomes U+FFFD, a pair is joined."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {fix_surrogates(k): fix_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [fix_surrogates(v) for v in value]
    return value


def note(text: str, broken: str | None = None) -> None:
    """One line on standard error that never takes the worker down (WRAP-5)."""
    if broken == "fragile-stderr":
        sys.stderr.write(f"reference worker: {text}\n")
        sys.stderr.flush()
        return
    with contextlib.suppress(OSError):
        os.write(2, f"reference worker: {text}\n".encode())


class TooLarge(Exception):
    """LIMIT-1: a message too large to send is the job code's error."""

    def __init__(self, size: int):
        super().__init__(f"message too large: {size} bytes")
        self.size = size


class Worker:
    """The protocol side: one connection at a time, replay buffer, heartbeats."""

    def __init__(self, payload: dict[str, Any], broken: str | None):
        self.p = payload
        self.broken = broken
        self.job_id = payload["jobId"] if broken != "wrong-job-id" else "someone-else"
        offered = payload.get("features") or []
        self.features = self._negotiate(offered)
        self.hello = (bool(self.features) or broken == "hello-to-v1") and broken != "no-hello"
        self.replay = "replay" in self.features and broken != "no-seq"
        self.interval = payload.get("heartbeatIntervalMs", 5000) / 1000
        if broken == "late-heartbeat":
            self.interval *= 2.5 * FACTOR
        if broken == "eager-heartbeat":
            self.interval /= 5
        self.window = payload.get("reconnectWindowMs", 60000) / 1000
        self.max_line = payload.get("maxLineBytes", 16 * 1024 * 1024)
        self.buffer = 1000 if broken == "small-buffer" else BUFFER_MESSAGES
        self.lock = threading.Condition()
        self.sock: socket.socket | None = None
        self.ready = False  # connected and (extended) welcomed
        self.pending: list[dict[str, Any]] = []  # not yet acked (replay) or not yet written
        self.sent = 0  # how many of pending (a prefix) went out on this connection
        self.seq = 0
        self.last_ts = 0
        self.started = False
        self.finished = False  # the terminal message is queued
        self.job_done = False  # the job code has ended
        self.terminal_written_at: float | None = None
        self.down_since: float | None = time.monotonic()
        self.delay = 0.1  # RECONNECT-1: the next wait
        self.dropped = 0  # REPLAY-6: logs dropped in this outage
        self.notice: dict[str, Any] | None = None
        self.cancelled = threading.Event()

    def _negotiate(self, offered: list[str]) -> list[str]:
        """NEG-2: offered, implemented and with what each needs."""
        if self.broken == "echo-features":
            return list(offered) if "auth" in offered else []
        both = [f for f in IMPLEMENTED if f in offered]
        if self.broken == "spool-without-replay":
            return both if "auth" in both else []
        return [f for f in both if all(n in both for n in NEEDS[f])]

    # -- messages --------------------------------------------------------------

    def stamp(self) -> int:
        """TIME-1: never earlier than the previous one."""
        self.last_ts = max(self.last_ts, time.time_ns() // 1_000_000)
        return self.last_ts // 1000 if self.broken == "seconds-timestamp" else self.last_ts

    def message(self, type_: str, **fields: Any) -> None:
        if self.finished and self.broken != "after-terminal":
            return
        with self.lock:  # stamped and written in one order (TIME-1, STREAM-5)
            if type_ != "heartbeat":
                self._make_room(type_)
            job_id = self.job_id
            if self.broken == "job-id-changes" and type_ not in ("started", "hello"):
                job_id = "someone-else"
            msg: dict[str, Any] = {"type": type_, "jobId": job_id, "timestamp": self.stamp()}
            msg |= fields
            sequenced = self.broken != "seq-on-some" or type_ == "log"
            if self.replay and type_ != "heartbeat" and sequenced:
                self.seq += 1
                msg["seq"] = self.seq
            size = len(self._encode(msg)) - 1
            if size > self.max_line and self.broken not in ("no-size-check", "long-failed"):
                if "seq" in msg:
                    self.seq -= 1
                raise TooLarge(size)
            if type_ == "heartbeat":
                if self.ready:  # HB-2: never buffered
                    self._write(msg)
                return
            self.pending.append(msg)
            if type_ in ("completed", "failed"):
                self.finished = True
            if self.ready:
                self._flush()

    def _make_room(self, type_: str) -> None:
        """REPLAY-6: connected, a full buffer blocks; disconnected, old logs go."""
        while len(self.pending) >= self.buffer:
            if self.broken == "drop-while-connected" or (not self.ready and self.started):
                if not self._drop_oldest_log():
                    self.lock.wait(0.05)
            else:
                self.lock.wait(0.05)

    def _drop_oldest_log(self) -> bool:
        first = 0 if self.broken == "drop-while-connected" else self.sent
        at = next(
            (
                i
                for i in range(first, len(self.pending))
                if self.pending[i]["type"] == "log" and self.pending[i] is not self.notice
            ),
            None,
        )
        if at is None:
            return False
        self._remove(at)
        self.dropped += 1
        if self.broken == "silent-drop":
            return True
        for i in range(len(self.pending) - 1, self.sent - 1, -1):  # it is near the end
            if self.pending[i] is self.notice:
                self._remove(i)
                break
        # One entry, kept up to date: the newest count, with a fresh seq.
        self.notice = {
            "type": "log",
            "jobId": self.job_id,
            "timestamp": self.stamp(),
            "level": "warn",
            "message": f"dropped {self.dropped} log messages while disconnected",
            "data": {"dropped": self.dropped},
        }
        if self.replay:
            self.seq += 1
            self.notice["seq"] = self.seq
        self.pending.append(self.notice)
        return True

    def _remove(self, index: int) -> None:
        del self.pending[index]
        if index < self.sent:
            self.sent -= 1

    def _encode(self, msg: dict[str, Any]) -> bytes:
        if self.broken == "bad-escaping":
            parts = [
                f'"{k}":' + (escape_badly(v) if isinstance(v, str) else json.dumps(v))
                for k, v in msg.items()
            ]
            return ("{" + ",".join(parts) + "}\n").encode()
        if self.broken == "raw-surrogate":
            return (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        line = json.dumps(fix_surrogates(msg), separators=(",", ":"), ensure_ascii=False)
        return (line + "\n").encode()

    def _write(self, msg: dict[str, Any]) -> bool:
        if self.broken == "conn-per-message":
            return self._write_alone(msg)
        if self.sock is None:
            return False
        line = self._encode(msg)
        try:
            if self.broken == "interleave" and msg["type"] == "progress":
                beat = {"type": "heartbeat", "jobId": self.job_id, "timestamp": self.stamp()}
                half = len(line) // 2
                self.sock.sendall(line[:half] + self._encode(beat) + line[half:])
            else:
                self.sock.sendall(line)
        except OSError:  # RECONNECT-2: never die from a failed write
            self._lost()
            return False
        if msg["type"] in ("completed", "failed") and self.terminal_written_at is None:
            self.terminal_written_at = time.monotonic()
        return True

    def _write_alone(self, msg: dict[str, Any]) -> bool:
        """The original bash wrapper: connect, write one line, close."""
        try:
            with self.connect() as sock:
                sock.sendall(self._encode(msg))
        except OSError:
            return False
        return True

    def _flush(self) -> None:
        """Write what is pending; without replay, what is written is gone."""
        while self.sent < len(self.pending):
            msg = self.pending[self.sent]
            if not self._write(msg):
                return
            if msg is self.notice:
                self.notice, self.dropped = None, 0  # sent: a later outage counts anew
            if self.replay and "seq" in msg:
                self.sent += 1  # kept until acked (REPLAY-3)
            else:
                del self.pending[self.sent]

    def _lost(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
                self.sock.close()
            except OSError:
                pass
        self.sock, self.ready = None, False
        self.sent = 0
        self.terminal_written_at = None
        self.down_since = self.down_since or time.monotonic()
        self.lock.notify_all()

    # -- the connection ----------------------------------------------------------

    def connect(self) -> socket.socket:
        path = self.p["socketPath"]
        if path.startswith("tcp://") and self.broken != "unix-only":
            host, _, port = path[6:].rpartition(":")
            return socket.create_connection((host.strip("[]"), int(port)), timeout=2)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock

    def wait_before_retry(self) -> None:
        """RECONNECT-1: 100, 200, 400, ... 2000 ms, with 0-20 % jitter."""
        down = self.down_since is not None and time.monotonic() - self.down_since > self.window
        if self.broken == "window-while-running" and self.started and down:
            os._exit(1)
        wait = {"hammer": 0.005, "fixed-2s": 2.0}.get(self.broken or "", self.delay)
        time.sleep(wait * (1 + 0.2 * (os.getpid() % 10) / 10))
        self.delay = min(self.delay * 2, 2.0)

    def run_connection(self) -> None:
        """Connect, handshake, read; on a failure wait, and again."""
        if self.broken == "conn-per-message":
            with self.lock:
                self.ready = True
                self.lock.notify_all()
            return
        while True:
            try:
                sock = self.connect()
            except OSError:
                if self.broken == "no-reconnect" and self.started:
                    return
                self.wait_before_retry()
                continue
            if self.broken == "reset-on-connect":
                self.delay = 0.1
            with self.lock:
                self.sock = sock
                if self.hello:
                    # AUTH-2: no welcome within max(2000, interval): the connection failed.
                    forever = self.broken == "wait-welcome-forever"
                    sock.settimeout(None if forever else max(2.0, self.interval))
                    self._write(self._hello())
                    if self.broken == "no-wait-welcome":
                        self._ready(0)
                else:
                    sock.settimeout(None)
                    self._ready(None)
            self.read(sock)
            with self.lock:
                if self.sock is sock:
                    self._lost()
            if self.broken == "no-reconnect":
                return
            if self.down_since is not None and self.started:
                note("connection lost; reconnecting", self.broken)
            self.wait_before_retry()

    def _hello(self) -> dict[str, Any]:
        pid = os.getppid() if self.broken == "wrong-pid" else os.getpid()
        return {
            "type": "hello",
            "jobId": self.job_id,
            "timestamp": self.stamp(),
            "token": self.p.get("token") or "no-token-offered",
            "protocolVersion": 1,
            "features": self.features,
            "pid": pid,
        }

    def _ready(self, last_seq: int | None) -> None:
        """The connection may carry messages: replay, or a v1 started again."""
        self.ready = True
        self.down_since = None
        if self.broken != "reset-on-connect":
            self.delay = 0.1  # RECONNECT-1: the waits start over once up
        if self.sock is not None and self.broken != "no-wait-welcome":
            self.sock.settimeout(None)
        if last_seq is not None:
            if self.broken != "replay-covered":
                self._acked(last_seq)
            self.sent = 0
            if self.broken == "no-replay" and self.started:
                self.pending = [m for m in self.pending if m["type"] in ("completed", "failed")]
            if self.broken == "replay-changed":
                for m in self.pending:
                    m["timestamp"] += 1
        elif (
            self.started
            and self.broken != "no-started-again"
            and not any(m["type"] == "started" for m in self.pending)
        ):
            # TIME-1: stamped now, and so is what waited for the connection.
            now = self.stamp()
            self.pending.insert(0, {"type": "started", "jobId": self.job_id, "timestamp": now})
            if self.broken != "stamp-at-creation":
                for m in self.pending:
                    m["timestamp"] = now
        self._flush()
        self.lock.notify_all()

    def read(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                if self.broken == "sigpipe":  # SIGPIPE is at its default (main)
                    time.sleep(0.05)
                    sock.sendall(b"\n" * 65536)
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if self.broken == "small-line-buffer" and len(line) > 65536:
                    continue
                self.on_server_line(line)
            if self.broken == "stop-reading" and self.ready:
                self.cancelled.wait()  # never returns in the flood case

    def on_server_line(self, line: bytes) -> None:
        if self.broken == "strict-lf" and line.endswith(b"\r"):
            return
        try:
            msg = json.loads(line)
        except ValueError:
            if self.broken == "crash-on-garbage" and line.strip():
                os._exit(70)
            return  # FRAME-3: skipped
        if not isinstance(msg, dict):
            return
        with self.lock:
            kind = msg.get("type")
            if kind == "welcome" and not self.ready:
                self._ready(int(msg.get("lastSeq", 0)))
            elif kind == "ack" and isinstance(msg.get("seq"), int):
                self._acked(msg["seq"])
                self.lock.notify_all()
            elif kind == "cancel":
                self.on_cancel()
            elif kind == "error" and msg.get("code") == "auth":
                if self.broken != "silent-auth":
                    note(f"the server refused the token (auth): {msg.get('message')}")
            elif kind not in ("welcome", "ack", "error") and self.broken == "crash-on-unknown-type":
                os._exit(70)
            # CTRL-6: anything else (unknown types, errors) is ignored.

    def _acked(self, seq: int) -> None:
        """Forget what ``seq`` covers: a prefix of pending, which is in seq order."""
        n = 0
        while n < len(self.pending) and self.pending[n].get("seq", seq + 1) <= seq:
            n += 1
        del self.pending[:n]
        self.sent = max(0, self.sent - n)

    def on_cancel(self) -> None:
        if self.broken == "ignore-cancel":
            return
        if self.broken == "wrapper-ends-job":
            self.message("failed", error="cancelled", retryable=True)
            return
        if self.broken == "slow-cancel":
            threading.Timer(4.5 * FACTOR, self.cancelled.set).start()
            return
        self.cancelled.set()

    def heartbeats(self) -> None:
        while not self.finished:
            time.sleep(self.interval)
            if self.broken not in ("no-heartbeat", "conn-per-message") and not self.finished:
                self.message("heartbeat")

    # -- the end -----------------------------------------------------------------

    def wait_delivered(self) -> bool:
        """Until the terminal message is acked (or written, v1); False to spool."""
        ack_wait = max(2.0, self.interval)  # REPLAY-3
        if self.broken == "slow-ack-timeout":
            ack_wait = 3.5 * FACTOR
        with self.lock:
            while self.pending:
                now = time.monotonic()
                if self.broken == "no-ack-wait" and self.terminal_written_at:
                    return True
                gone = self.down_since is not None and now - self.down_since > self.window
                if gone and self.broken != "never-give-up":
                    return False  # RECONNECT-3
                if (
                    self.replay
                    and self.broken != "no-ack-timeout"
                    and self.terminal_written_at
                    and now - self.terminal_written_at > ack_wait
                ):
                    self._lost()  # REPLAY-3: treat the connection as failed
                self.lock.wait(0.05)
        return True

    def spool(self) -> None:
        path = self.p.get("spoolPath")
        if not path or "spool" not in self.features or self.broken == "no-spool":
            return
        with self.lock:
            lines = [self._hello(), *self.pending]
            if self.broken == "spool-no-token":
                del lines[0]["token"]
            if self.broken == "spool-terminal-only":
                lines = [lines[0], lines[-1]]
        mode = 0o644 if self.broken == "spool-readable" else 0o600
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(self._encode(m) for m in lines))
            f.flush()
            os.fsync(f.fileno())
        os.rename(path + ".tmp", path)


def job(worker: Worker, data: Any) -> tuple[str, Any]:
    """The SPEC section 11 scenarios; returns ("completed", result) or ("failed", error)."""
    d = data if isinstance(data, dict) else {}
    scenario = d.get("scenario", "complete" if worker.broken != "no-default-scenario" else None)
    broken = worker.broken

    def progress(percent: float, message: str) -> None:
        fields = {} if broken == "missing-field" else {"percent": percent}
        worker.message("progress", **fields, message=message)

    def log(message: str, data: Any = None, level: str = "info") -> None:
        level = level.upper() if broken == "bad-level" else level
        worker.message(
            "log", level=level, message=message, **({"data": data} if data is not None else {})
        )

    if broken == "unknown-type":
        worker.message("note", text="hello")  # type: ignore[arg-type]
    if broken == "second-started":
        worker.message("started")
    if scenario == "echo":
        log(d.get("text", ""))
        progress(50, d.get("text", ""))
        return "completed", d.get("value")
    if scenario == "fail":
        return "failed", d.get("message", "fixture failure")
    if scenario == "crash":
        os._exit(1 if broken == "crash-wrong-code" else d.get("code", 3))
    if scenario == "sleep":
        time.sleep(d.get("ms", 1000) / 1000)
        return "completed", {"slept": d.get("ms", 1000)}
    if scenario == "progress":
        count = d.get("count", 100)
        for i in range(1, count + 1):
            progress(i * 100 / count, f"step {i}")
        return "completed", {"count": count}
    if scenario == "logs":
        count = d.get("count", 10)
        for i in range(1, count + 1):
            log(f"line {i}", {"i": i})
            time.sleep(d.get("intervalMs", 0) / 1000)
        return "completed", {"count": count}
    if scenario == "levels":
        for level in ("debug", "info", "warn", "error"):
            log(level, {"level": level}, level)
        return "completed", None
    if scenario == "cancel":
        if worker.cancelled.wait(d.get("ms", 30000) / 1000):
            log(CANCEL_SEEN)
            return "failed", "cancelled"
        return "completed", {"cancelled": False}
    if scenario == "checkpoint":
        previous = worker.p.get("checkpoint")
        if broken == "null-checkpoint-is-one" and "checkpoint" in worker.p:
            return "completed", {"resumedFrom": previous}
        if previous is not None and broken != "lose-checkpoint":
            return "completed", {"resumedFrom": previous}
        if broken != "no-checkpoint":
            worker.message("checkpoint", data=d.get("value", {"step": 1}))
        return "failed", "checkpoint saved"
    if scenario == "large":
        return "completed", "x" * d.get("bytes", 1048576)
    if scenario == "complete":
        progress(50, "halfway")
        return "completed", {"ok": True}
    return "failed", f"unknown scenario {scenario!r}"


def read_payload(broken: str | None) -> dict[str, Any]:
    """PAY-1, ENV-2; exits 2 with one line on stderr when it is unusable (PAY-6)."""
    raw = sys.stdin.buffer.read()
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        payload = {"x-error": f"payload is not JSON: {exc}"}
    if not isinstance(payload, dict):
        payload = {} if broken == "array-payload-as-empty" else {"x-error": "not a JSON object"}
    if broken == "strict-payload" and set(payload) - KNOWN_PAYLOAD:
        payload = {"x-error": f"unknown payload fields {sorted(set(payload) - KNOWN_PAYLOAD)}"}
    if broken == "reject-unknown-feature" and set(payload.get("features") or []) - {
        "auth",
        *IMPLEMENTED,
    }:
        payload = {"x-error": "unknown features offered"}
    use_env = broken != "no-env" and not (broken == "env-only-when-empty" and raw.strip())
    if use_env:
        order = (
            ("DONKEYLABS", "EXTJOB") if broken == "donkeylabs-first" else ("EXTJOB", "DONKEYLABS")
        )
        port = os.environ.get("DONKEYLABS_TCP_PORT")
        for field, name in (
            ("jobId", "JOB_ID"),
            ("name", "JOB_NAME"),
            ("socketPath", "SOCKET_PATH"),
        ):
            value = os.environ.get(f"{order[0]}_{name}") or os.environ.get(f"{order[1]}_{name}")
            if not payload.get(field) and value:
                payload[field] = value
        if not payload.get("socketPath") and port:
            payload["socketPath"] = f"tcp://127.0.0.1:{port}"
    payload.setdefault("data", {})
    missing = [f for f in ("jobId", "name", "socketPath") if not payload.get(f)]
    if payload.get("x-error") or missing:
        if broken == "connect-on-bad-payload" and payload.get("socketPath"):
            return payload | {"jobId": payload.get("jobId") or "unknown", "data": {}}
        sys.stderr.write(
            f"fixture: {payload.get('x-error') or 'missing ' + ', '.join(missing)} (PAY-6)\n"
        )
        sys.exit(2)
    return payload


def guard_stdio() -> None:
    """WRAP-5: with descriptors 0-2 closed, a socket could land on 1 or 2 and a
    note for standard error would go to the server; /dev/null takes them first."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--break", dest="broken", choices=sorted(BREAKS))
    broken = parser.parse_args().broken
    if broken != "fragile-stderr":
        guard_stdio()
    payload = read_payload(broken)
    if broken == "connect-on-bad-payload" and payload.get("x-error"):
        payload.pop("x-error")
    worker = Worker(payload, broken)
    if broken == "sigpipe":
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if broken != "sigterm-dies":  # CANCEL-3: SIGTERM is a cancel request
        signal.signal(signal.SIGTERM, lambda *_: worker.on_cancel())
    if broken == "stdout-noise":
        print("starting job", flush=True)
    if broken == "slow-start":
        time.sleep(6 * FACTOR)
    threading.Thread(target=worker.run_connection, daemon=True).start()
    with worker.lock:  # connect (and be welcomed) before the job code runs
        first_try = time.monotonic()
        while not worker.ready:
            waited = time.monotonic() - first_try
            if broken == "give-up-at-once" and worker.delay > 0.1:
                waited = worker.window
            if broken == "run-without-connection" and worker.delay > 0.1:
                break
            if waited >= worker.window and broken not in ("ignore-auth", "never-give-up"):
                note(f"no connection within reconnectWindowMs ({worker.window * 1000:.0f} ms)")
                return 1  # RECONNECT-6
            worker.lock.wait(0.05)
        if broken == "heartbeat-first":
            worker._write(
                {"type": "heartbeat", "jobId": worker.job_id, "timestamp": worker.stamp()}
            )
    worker.message("started")
    worker.started = True
    threading.Thread(target=worker.heartbeats, daemon=True).start()
    outcome, value = job(worker, payload.get("data"))
    worker.job_done = True
    try:
        if outcome == "completed":
            worker.message("completed", **({} if broken == "result-dropped" else {"result": value}))
        else:
            worker.message("failed", **failure(worker, value))
    except TooLarge as exc:  # LIMIT-1: the result cannot fit
        outcome = "failed"
        worker.message("failed", error=f"result too large: {exc.size} bytes", retryable=False)
    if broken == "after-terminal":
        worker.message("log", level="info", message="one more thing")
    if not worker.wait_delivered():
        worker.spool()
    if broken == "linger":
        time.sleep(1.8 * FACTOR)
    return 0 if outcome == "completed" or broken == "exit-0-after-fail" else 1


def failure(worker: Worker, error: str) -> dict[str, Any]:
    """The failed message's fields; cut to fit maxLineBytes (LIMIT-1)."""
    retryable = worker.broken != "not-retryable"
    fields: dict[str, Any] = {"error": "" if worker.broken == "empty-error" else error}
    fields |= {"stack": "reference_worker.job", "retryable": retryable}
    if worker.broken == "long-failed" or len(json.dumps(fields)) < worker.max_line - 512:
        return fields
    return {"error": error[: worker.max_line // 2], "retryable": retryable}


if __name__ == "__main__":
    sys.exit(main())

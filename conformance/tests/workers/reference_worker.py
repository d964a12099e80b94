#!/usr/bin/env python3
"""A fixture worker written from SPEC.md alone, without any wrapper.

It implements the whole protocol (v1 core, auth, replay, control, spool,
checkpoint) in one file of plain Python, so that the conformance suite can be
tested before, and independently of, the wrappers. ``--break RULE`` makes it
break exactly one rule; the suite's own tests check that every such worker is
caught by the right requirement id (see BREAKS).

    python reference_worker.py [--break RULE]   (payload on stdin, SPEC 2)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from typing import Any

IMPLEMENTED = ("auth", "replay", "control", "spool", "checkpoint")
BREAKS = {
    "no-heartbeat": "never sends heartbeats (HB-2)",
    "late-heartbeat": "heartbeats at six times the interval (HB-2)",
    "eager-heartbeat": "heartbeats at a fifth of the interval (HB-2, a SHOULD: non-strict)",
    "heartbeat-first": "a heartbeat before started, like the original Python wrapper (LIFE-1)",
    "missing-field": "progress without percent (MSG-4)",
    "wrong-job-id": "messages name another job (MSG-1)",
    "after-terminal": "a log after completed (LIFE-4)",
    "exit-0-after-fail": "exits 0 after failed (EXIT-2)",
    "linger": "stays 2 s after its terminal message (EXIT-3)",
    "seconds-timestamp": "timestamps in seconds, not milliseconds (MSG-1)",
    "bad-escaping": "escapes only backslash, quote and newline, like the original bash (FRAME-2)",
    "stdout-noise": "prints on standard output (FIX-3)",
    "no-env": "ignores the environment fallback (ENV-2)",
    "connect-on-bad-payload": "connects and completes although the payload is bad (PAY-6)",
    "no-reconnect": "gives up when the connection drops (RECONNECT-1)",
    "no-started-again": "a v1 reconnect without started (LIFE-3)",
    "no-hello": "extended payload, but no hello (AUTH-2)",
    "no-wait-welcome": "sends started right after hello, before welcome (AUTH-2)",
    "no-seq": "negotiates replay but sends no seq (REPLAY-1)",
    "no-replay": "does not resend unacknowledged messages after a reconnect (REPLAY-4)",
    "replay-covered": "resends what the welcome's lastSeq covers (REPLAY-4)",
    "no-ack-timeout": "waits forever for the terminal ack (REPLAY-3)",
    "ignore-cancel": "never tells the job code about cancel (CANCEL-3)",
    "stop-reading": "stops reading server lines after welcome (CTRL-6)",
    "no-spool": "exits without spooling when the server is gone (SPOOL-2)",
    "lose-checkpoint": "ignores the payload's checkpoint (CKPT-2)",
}


def escape_badly(text: str) -> str:
    """The original bash wrapper's escaping: tabs and controls go through raw."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Worker:
    """The protocol side: one connection at a time, replay buffer, heartbeats."""

    def __init__(self, payload: dict[str, Any], broken: str | None):
        self.p = payload
        self.broken = broken
        self.job_id = payload["jobId"] if broken != "wrong-job-id" else "someone-else"
        offered = payload.get("features") or []
        self.features = [f for f in IMPLEMENTED if f in offered] if "auth" in offered else []
        self.hello = bool(self.features) and broken != "no-hello"
        self.replay = "replay" in self.features and broken != "no-seq"
        self.interval = payload.get("heartbeatIntervalMs", 5000) / 1000
        if broken == "late-heartbeat":
            self.interval *= 6
        if broken == "eager-heartbeat":
            self.interval /= 5
        self.window = payload.get("reconnectWindowMs", 60000) / 1000
        self.lock = threading.Condition()
        self.sock: socket.socket | None = None
        self.ready = False  # connected and (extended) welcomed
        self.pending: list[dict[str, Any]] = []  # not yet acked (replay) or not yet written
        self.written: set[int] = set()  # seqs of pending messages written on this connection
        self.seq = 0
        self.last_ts = 0
        self.started = False
        self.finished = False  # the terminal message is queued
        self.terminal_written_at: float | None = None
        self.down_since: float | None = time.monotonic()
        self.cancelled = threading.Event()

    # -- messages --------------------------------------------------------------

    def message(self, type_: str, **fields: Any) -> None:
        if self.finished and self.broken != "after-terminal":
            return
        with self.lock:  # stamped and written in one order (TIME-1, STREAM-5)
            self.last_ts = max(self.last_ts, time.time_ns() // 1_000_000)
            ts = self.last_ts // 1000 if self.broken == "seconds-timestamp" else self.last_ts
            msg: dict[str, Any] = {"type": type_, "jobId": self.job_id, "timestamp": ts, **fields}
            if self.replay and type_ != "heartbeat":
                self.seq += 1
                msg["seq"] = self.seq
            if type_ == "heartbeat":
                if self.ready:  # HB-2: never buffered
                    self._write(msg)
                return
            self.pending.append(msg)
            if type_ in ("completed", "failed"):
                self.finished = True
            if self.ready:
                self._flush()

    def _encode(self, msg: dict[str, Any]) -> bytes:
        if self.broken == "bad-escaping":
            parts = [
                f'"{k}":' + (escape_badly(v) if isinstance(v, str) else json.dumps(v))
                for k, v in msg.items()
            ]
            return ("{" + ",".join(parts) + "}\n").encode()
        return (json.dumps(msg, separators=(",", ":")) + "\n").encode()

    def _write(self, msg: dict[str, Any]) -> bool:
        if self.sock is None:
            return False
        try:
            self.sock.sendall(self._encode(msg))
        except OSError:  # RECONNECT-2: never die from a failed write
            self._lost()
            return False
        if msg["type"] in ("completed", "failed") and self.terminal_written_at is None:
            self.terminal_written_at = time.monotonic()
        return True

    def _flush(self) -> None:
        """Write what is pending; without replay, what is written is gone."""
        for msg in list(self.pending):
            if self.replay and msg["seq"] in self.written:
                continue
            if not self._write(msg):
                return
            if self.replay:
                self.written.add(msg["seq"])  # kept until acked (REPLAY-3)
            else:
                self.pending.remove(msg)

    def _lost(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
                self.sock.close()
            except OSError:
                pass
        self.sock, self.ready = None, False
        self.terminal_written_at = None
        self.down_since = self.down_since or time.monotonic()
        self.lock.notify_all()

    # -- the connection ----------------------------------------------------------

    def connect(self) -> socket.socket:
        path = self.p["socketPath"]
        if path.startswith("tcp://"):
            host, _, port = path[6:].rpartition(":")
            return socket.create_connection((host.strip("[]"), int(port)), timeout=2)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        sock.connect(path)
        return sock

    def run_connection(self) -> None:
        """Connect, handshake, read; on loss wait 100, 200, ... 2000 ms and again."""
        delay = 0.1
        while True:
            try:
                sock = self.connect()
            except OSError:
                if self.broken == "no-reconnect" and self.started:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            sock.settimeout(None)
            delay = 0.1
            with self.lock:
                self.sock = sock
                if self.hello:
                    self._write(
                        {
                            "type": "hello",
                            "jobId": self.job_id,
                            "timestamp": time.time_ns() // 1_000_000,
                            "token": self.p["token"],
                            "protocolVersion": 1,
                            "features": self.features,
                            "pid": os.getpid(),
                        }
                    )
                    if self.broken == "no-wait-welcome":
                        self._ready(0)
                else:
                    self._ready(None)
            self.read(sock)
            with self.lock:
                if self.sock is sock:
                    self._lost()
            if self.broken == "no-reconnect":
                return

    def _ready(self, last_seq: int | None) -> None:
        """The connection may carry messages: replay, or a v1 started again."""
        self.ready = True
        self.down_since = None
        if last_seq is not None:
            if self.broken != "replay-covered":
                self.pending = [m for m in self.pending if m.get("seq", last_seq + 1) > last_seq]
            self.written.clear()
            if self.broken == "no-replay" and self.started:
                self.pending = [m for m in self.pending if m["type"] in ("completed", "failed")]
        elif (
            self.started
            and self.broken != "no-started-again"
            and not any(m["type"] == "started" for m in self.pending)
        ):
            self.pending.insert(
                0,
                {
                    "type": "started",
                    "jobId": self.job_id,
                    # as old as what waited for the connection (STREAM-5)
                    "timestamp": self.pending[0]["timestamp"] if self.pending else self.last_ts,
                },
            )
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
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self.on_server_line(line)
            if self.broken == "stop-reading" and self.ready:
                self.cancelled.wait()  # never returns in the flood case

    def on_server_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        with self.lock:
            kind = msg.get("type")
            if kind == "welcome" and not self.ready:
                self._ready(int(msg.get("lastSeq", 0)))
            elif kind == "ack" and isinstance(msg.get("seq"), int):
                self.pending = [
                    m for m in self.pending if m.get("seq", msg["seq"] + 1) > msg["seq"]
                ]
                self.lock.notify_all()
            elif kind == "cancel" and self.broken != "ignore-cancel":
                self.cancelled.set()
            # CTRL-6: anything else (unknown types, errors) is ignored.

    def heartbeats(self) -> None:
        while not self.finished:
            time.sleep(self.interval)
            if self.broken != "no-heartbeat" and not self.finished:
                self.message("heartbeat")

    # -- the end -----------------------------------------------------------------

    def wait_delivered(self) -> bool:
        """Until the terminal message is acked (or written, v1); False to spool."""
        ack_wait = max(2.0, self.interval)  # REPLAY-3
        with self.lock:
            while self.pending:
                now = time.monotonic()
                if self.down_since is not None and now - self.down_since > self.window:
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
        hello = {
            "type": "hello",
            "jobId": self.job_id,
            "timestamp": self.last_ts,
            "token": self.p["token"],
            "protocolVersion": 1,
            "features": self.features,
            "pid": os.getpid(),
        }
        with self.lock:
            lines = [hello, *self.pending]
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(self._encode(m) for m in lines))
            f.flush()
            os.fsync(f.fileno())
        os.rename(path + ".tmp", path)


def job(worker: Worker, data: Any) -> tuple[str, Any]:
    """The SPEC section 11 scenarios; returns ("completed", result) or ("failed", error)."""
    d = data if isinstance(data, dict) else {}
    scenario = d.get("scenario", "complete")

    def progress(percent: float, message: str) -> None:
        fields = (
            {"message": message}
            if worker.broken == "missing-field"
            else {"percent": percent, "message": message}
        )
        worker.message("progress", **fields)

    def log(message: str, data: Any = None, level: str = "info") -> None:
        worker.message(
            "log", level=level, message=message, **({"data": data} if data is not None else {})
        )

    if scenario == "echo":
        log(d.get("text", ""))
        progress(50, d.get("text", ""))
        return "completed", d.get("value")
    if scenario == "fail":
        return "failed", d.get("message", "fixture failure")
    if scenario == "crash":
        os._exit(d.get("code", 3))
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
            return "failed", "cancelled"
        return "completed", {"cancelled": False}
    if scenario == "checkpoint":
        if "checkpoint" in worker.p and worker.broken != "lose-checkpoint":
            return "completed", {"resumedFrom": worker.p["checkpoint"]}
        worker.message("checkpoint", data=d.get("value", {"step": 1}))
        return "failed", "checkpoint saved"
    if scenario == "large":
        return "completed", "x" * d.get("bytes", 1048576)
    progress(50, "halfway")
    return "completed", {"ok": True}


def read_payload(broken: str | None) -> dict[str, Any]:
    """PAY-1, ENV-2; exits 2 with one line on stderr when it is unusable (PAY-6)."""
    raw = sys.stdin.buffer.read()
    try:
        payload = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        payload = {"x-error": f"payload is not JSON: {exc}"}
    if not isinstance(payload, dict):
        payload = {"x-error": "payload is not a JSON object"}
    if broken != "no-env":
        port = os.environ.get("DONKEYLABS_TCP_PORT")
        for field, name in (
            ("jobId", "JOB_ID"),
            ("name", "JOB_NAME"),
            ("socketPath", "SOCKET_PATH"),
        ):
            value = os.environ.get(f"EXTJOB_{name}") or os.environ.get(f"DONKEYLABS_{name}")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--break", dest="broken", choices=sorted(BREAKS))
    broken = parser.parse_args().broken
    payload = read_payload(broken)
    if broken == "connect-on-bad-payload" and payload.get("x-error"):
        payload.pop("x-error")
    worker = Worker(payload, broken)
    if broken == "stdout-noise":
        print("starting job", flush=True)
    threading.Thread(target=worker.run_connection, daemon=True).start()
    with worker.lock:  # connect (and be welcomed) before the job code runs
        worker.lock.wait_for(lambda: worker.ready)
        if broken == "heartbeat-first":
            worker._write(
                {"type": "heartbeat", "jobId": worker.job_id, "timestamp": time.time_ns() // 10**6}
            )
    worker.message("started")
    worker.started = True
    threading.Thread(target=worker.heartbeats, daemon=True).start()
    outcome, value = job(worker, payload.get("data"))
    if outcome == "completed":
        worker.message("completed", result=value)
    else:
        worker.message("failed", error=value, stack="reference_worker.job", retryable=True)
    if broken == "after-terminal":
        worker.message("log", level="info", message="one more thing")
    if not worker.wait_delivered():
        worker.spool()
    if broken == "linger":
        time.sleep(2)
    return 0 if outcome == "completed" or broken == "exit-0-after-fail" else 1


if __name__ == "__main__":
    sys.exit(main())

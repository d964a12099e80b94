"""One running attempt: its socket, its process, its deadlines, its messages.

A ``Run`` exists from spawn (or re-adoption after a restart) until the worker
process has exited and the outcome is recorded. Deadlines are timer handles
on the event loop's monotonic clock (HB-3): the stale watchdog is rescheduled
only when it fires, never per message, so a heartbeat costs one float store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from extjob.protocol import (
    EXIT_AFTER_TERMINAL_MS,
    Attempt,
    AttemptState,
    Message,
    RemoteProtocolError,
    ack,
    cancel,
    decode,
    heartbeat_interval_ms,
    terminal_ack_timeout_ms,
)

from .config import JobDefinition
from .connection import WorkerConnection
from .models import now_ms
from .output import OutputTail
from .procs import ExitWatcher, group_alive, signal_group, start_time
from .ratelimit import LogLimiter
from .store import AttemptRecord, Batch, NewLog
from .wire import WireLog

if TYPE_CHECKING:
    from .server import JobServer

log = logging.getLogger(__name__)


class Peer(Protocol):
    """Where messages came from: a connection, or a spool file (SPOOL-3)."""

    extended: bool
    features: frozenset[str]

    def reject(self, exc: RemoteProtocolError, seq: int | None = None) -> None: ...
    def send(self, message: dict[str, Any]) -> None: ...


class SpoolPeer:
    """A spool file read like a connection that cannot be answered."""

    extended = False
    features: frozenset[str] = frozenset()

    def __init__(self, job_id: str, features: frozenset[str]) -> None:
        self.job_id = job_id
        self.features = features

    def reject(self, exc: RemoteProtocolError, seq: int | None = None) -> None:
        log.warning("job %s: discarded spooled line: %s", self.job_id, exc)

    def send(self, message: dict[str, Any]) -> None:
        pass


class Run:
    def __init__(
        self, server: JobServer, definition: JobDefinition, rec: AttemptRecord, *, adopted: bool
    ) -> None:
        self.server = server
        self.definition = definition
        self.rec = rec
        self.job_id = rec.job_id
        self.name = definition.name
        self.token = rec.token
        self.metrics = server.metrics
        self.max_line_bytes = server.config.max_line_bytes
        self.require_hello = server.config.require_hello
        self.heartbeat_interval_ms = heartbeat_interval_ms(definition.heartbeat_timeout_ms)
        if rec.terminal is not None:
            state = AttemptState.FINISHED
        elif rec.last_seq:
            state = AttemptState.RUNNING
        else:
            state = AttemptState.SPAWNED
        self.protocol = Attempt(rec.job_id, rec.last_seq, state)
        self.stored_seq = rec.last_seq
        self.next_index = rec.log_count + 1
        self.terminal: dict[str, Any] | None = dict(rec.terminal) if rec.terminal else None
        self.connections: set[WorkerConnection] = set()
        self.control: WorkerConnection | None = None
        # After a restart the first connection is already a reconnect.
        self.ever_connected = adopted
        self.loop = asyncio.get_running_loop()
        self.last_receipt = self.loop.time()  # spawn, or restart: RECONNECT-5, START-1
        self.stale = False
        self.cancel_reason: str | None = "requested" if rec.cancel_requested else None
        self.fail_reason: str | None = None
        self.killed_by: str | None = None
        self.finalized = False
        self.exited = False
        self.tails = {
            "stdout": OutputTail(rec.out_path, rec.out_offset),
            "stderr": OutputTail(rec.err_path, rec.err_offset),
        }
        self.listener: asyncio.AbstractServer | None = None
        self.watcher: ExitWatcher | None = None
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.done = self.loop.create_future()
        self.wants_progress = True
        self.wire = WireLog(rec.spawned_at)  # the dashboard's view (wire.py)
        # Per attempt, not per connection: a v1 worker may connect once per message.
        self.discards = LogLimiter(log, f"lines discarded from job {self.job_id}", loop=self.loop)

    # setup

    async def listen(self) -> None:
        """Listen on the attempt's own socket, mode 0600 (TRANS-2)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.rec.socket_path)
        self.listener = await self.loop.create_unix_server(
            lambda: WorkerConnection(self), self.rec.socket_path
        )
        os.chmod(self.rec.socket_path, 0o600)

    def watch(self, child: subprocess.Popen[bytes] | None = None) -> None:
        self.watcher = ExitWatcher(self.rec.pid, self._on_exit, child)

    def adopt(self, pid: int, child: subprocess.Popen[bytes] | None = None) -> None:
        """Record the worker's identity (PID and start time) and watch for its exit."""
        started = start_time(pid) or 0
        self.rec = dataclasses.replace(self.rec, pid=pid, pid_start=started)
        self.server.store.record_pid(self.job_id, pid, started)
        self.watch(child)

    def start_deadlines(self) -> None:
        if self.terminal is not None:
            self.after_terminal()
            return
        self._check_stale()
        if self.definition.timeout_ms:
            deadline = self.rec.spawned_at + self.definition.timeout_ms / 1000
            self._at("timeout", deadline, self._timed_out)
        if self.cancel_reason:
            self.cancel_reason = None
            self.cancel("requested")

    # messages

    def touch(self) -> None:
        """SRV-1: any valid line is a sign of life, at its receipt time (HB-3)."""
        self.last_receipt = self.loop.time()
        self.stale = False

    def connected(self, conn: WorkerConnection) -> None:
        self.touch()
        if self.ever_connected:
            self.metrics.reconnects += 1
            self.server.emit("job.reconnected", self, {})
        self.ever_connected = True

    def receive(self, peer: Peer, messages: list[Message]) -> None:
        """Apply one read's worth of messages: record, then ack, then emit (REPLAY-2).

        Progress events alone may go out before the record (``_emit_progress``).
        """
        self.touch()
        self.metrics.messages_received += len(messages)
        self.wants_progress = self.server.events.wants("job.external.progress")
        batch = Batch()
        events: list[tuple[str, dict[str, Any]]] = []
        sequenced = False
        for message in messages:
            try:
                verdict = self.protocol.receive(message, "replay" in peer.features)
            except RemoteProtocolError as exc:
                peer.reject(exc, message.seq)
                continue
            sequenced = sequenced or message.seq is not None
            if verdict.tolerated:
                log.info("job %s: tolerated %s (%s)", self.job_id, message.type, verdict.tolerated)
            if verdict.action == "record":
                self._collect(message, batch, events)
        if self.protocol.last_seq != self.stored_seq:
            batch.last_seq = self.protocol.last_seq
        if not batch:  # only heartbeats or duplicates: nothing to store, maybe re-ack
            self._recorded(True, peer, sequenced, events, batch)
            return
        first = self.next_index
        self.next_index += len(batch.logs)
        self.server.recorder.add(
            self.job_id,
            first,
            batch,
            lambda ok: self._recorded(ok, peer, sequenced, events, batch),
        )

    def _recorded(
        self,
        ok: bool,
        peer: Peer,
        sequenced: bool,
        events: list[tuple[str, dict[str, Any]]],
        batch: Batch,
    ) -> None:
        """After the store: ack (REPLAY-2), then emit; or forget what was not stored."""
        if not ok:
            self._forget()
            for conn in tuple(self.connections):
                conn.close()  # the worker reconnects and replays from what is stored
            return
        if batch.last_seq is not None:
            self.stored_seq = max(self.stored_seq, batch.last_seq)
        if batch.terminal is not None:
            self.terminal = dict(batch.terminal)
        if sequenced and "replay" in peer.features and self.stored_seq:
            peer.send(ack(self.job_id, self.stored_seq))
        for name, data in events:
            self.server.emit(name, self, data)
        if batch.terminal is not None:
            self.server.on_terminal(self)

    def _forget(self) -> None:
        """Roll the protocol state back to what is stored, so that a replay is recorded."""
        state = AttemptState.RUNNING if self.stored_seq else AttemptState.SPAWNED
        self.protocol = Attempt(self.job_id, self.stored_seq, state)

    def _collect(
        self, message: Message, batch: Batch, events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        body = message.body
        kind = message.type
        if kind == "progress":  # the hot path: keep it lean
            progress = batch.progress = (body["percent"], body.get("message"), body.get("data"))
            if self.wants_progress:
                self._emit_progress(progress, events)
        elif kind == "log":
            entry = NewLog(
                message.timestamp, body["level"], body["message"], body.get("data"), "worker"
            )
            batch.logs.append(entry)
            events.append(("job.external.log", _log_event(entry)))
        elif kind == "started":
            events.append(("job.external.spawned", {"pid": self.rec.pid}))
        elif kind == "checkpoint":
            batch.checkpoint = (body["data"],)
        elif message.is_terminal:
            batch.terminal = dict(body)

    def _emit_progress(
        self, progress: tuple[Any, Any, Any], events: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Progress is not part of the exactly-once record, so its event need
        not wait for the commit: emitted at once, it reaches subscribers
        without the store's latency. Behind an event of this read that waits
        for the commit (a log, started), it waits too, to keep the order."""
        percent, message, data = progress
        event = {"percent": percent, "message": message, "data": data}
        if events:
            events.append(("job.external.progress", event))
        else:
            self.server.emit("job.external.progress", self, event)

    def commit(self, batch: Batch) -> bool:
        """Store a batch of the server's own making (output lines, notes) right away."""
        try:
            self.server.store.record([(self.job_id, self.next_index, batch)])
        except Exception:
            log.exception("job %s: could not record %d log entries", self.job_id, len(batch.logs))
            return False
        self.next_index += len(batch.logs)
        return True

    def note(self, level: str, message: str) -> None:
        """A log entry from the server itself about this job (kill steps, exit warnings)."""
        entry = NewLog(now_ms(), level, message, None, "server")
        if self.commit(Batch(logs=[entry])):
            self.server.emit("job.external.log", self, _log_event(entry))

    def poll_output(self, final: bool = False) -> None:
        """Take new stdout/stderr lines into the log (SRV-7), with their file offsets."""
        for source, tail in self.tails.items():
            while True:
                start = tail.offset
                lines = tail.read_lines(final)
                if not lines:
                    break
                level = "info" if source == "stdout" else "error"
                entries = [NewLog(now_ms(), level, line, None, source) for line in lines]  # type: ignore[arg-type]
                batch = Batch(logs=entries)
                setattr(batch, "out_offset" if source == "stdout" else "err_offset", tail.offset)
                if not self.commit(batch):
                    tail.offset = start  # read them again next time
                    return
                for entry in entries:
                    self.server.emit("job.external.log", self, _log_event(entry))
                if not final:
                    break

    # deadlines

    def _at(self, name: str, when: float, callback: Callable[[], None]) -> None:
        old = self.timers.pop(name, None)
        if old is not None:
            old.cancel()
        self.timers[name] = self.loop.call_at(when, callback)

    def _check_stale(self) -> None:
        """STALE-1 once per silence, STALE-2 at twice the timeout."""
        if self.terminal is not None or self.exited:
            return
        timeout = self.definition.heartbeat_timeout_ms / 1000
        silence = self.loop.time() - self.last_receipt
        if silence >= 2 * timeout:
            self.terminate(f"Heartbeat timeout: no message for {int(silence * 1000)} ms")
            return
        if silence >= timeout and not self.stale:
            self.stale = True
            self.metrics.stale_count += 1
            self.server.emit("job.stale", self, {"timeSinceHeartbeat": int(silence * 1000)})
        wait = 2 * timeout if self.stale else timeout
        self._at("stale", self.last_receipt + wait, self._check_stale)

    def _timed_out(self) -> None:
        """TIMEOUT-1: cancel with reason timeout; KILL-1 follows at the cancel deadline."""
        if self.fail_reason is None:
            self.fail_reason = f"Job timed out after {self.definition.timeout_ms} ms"
        self.cancel("timeout")

    def cancel(self, reason: str) -> None:
        """CANCEL-1/2: a cancel message when control was negotiated, else KILL-1 at once."""
        if self.terminal is not None or self.cancel_reason is not None or self.exited:
            return
        self.cancel_reason = reason
        if self.control is None:
            self.terminate()
            return
        deadline_ms = self.definition.cancel_deadline_ms
        self.control.send(cancel(self.job_id, reason, deadline_ms))
        self._at("cancel", self.loop.time() + deadline_ms / 1000, self.terminate)

    def terminate(self, reason: str | None = None) -> None:
        """KILL-1: SIGTERM to the process group, SIGKILL after the grace if any of it remains."""
        if reason is not None and self.fail_reason is None:
            self.fail_reason = reason
        if self.killed_by is not None or self.exited:
            return
        self.metrics.killed_count += 1
        self.killed_by = "SIGTERM"
        if signal_group(self.rec.pid, signal.SIGTERM):
            self.note(
                "warn", f"terminating: SIGTERM sent ({reason or self.cancel_reason or 'ended'})"
            )
        grace = self.definition.kill_grace_ms / 1000
        self._at("kill", self.loop.time() + grace, self._kill)

    def _kill(self) -> None:
        if group_alive(self.rec.pid):
            signal_group(self.rec.pid, signal.SIGKILL)
            self.killed_by = "SIGKILL"
            if not self.finalized:
                self.note("warn", "SIGKILL sent: the process group outlived the kill grace")

    def after_terminal(self) -> None:
        """The outcome is recorded: stop watching for silence, but expect an exit (EXIT-3)."""
        for name in ("stale", "timeout", "cancel"):
            handle = self.timers.pop(name, None)
            if handle is not None:
                handle.cancel()
        if not self.exited:
            wait = terminal_ack_timeout_ms(self.heartbeat_interval_ms) + EXIT_AFTER_TERMINAL_MS
            self._at("exit", self.loop.time() + wait / 1000 + 1, self._linger)

    def _linger(self) -> None:
        self.note("warn", "the worker did not exit after its terminal message (EXIT-3)")
        self.terminate()

    # exit

    def _on_exit(self, status: int | None) -> None:
        self.watcher = None
        self.exited = True
        self.loop.create_task(self._collect_exit(status))

    async def _collect_exit(self, status: int | None) -> None:
        """EXIT-1: read what is still buffered, collect the spool file, then decide."""
        pending = [conn.closed for conn in self.connections]
        if pending:
            # The worker's end is closed by its exit; a child that inherited the
            # socket could keep it open, so do not wait for it forever.
            await asyncio.wait(pending, timeout=1.0)
        self.server.recorder.flush()
        self.poll_output(final=True)
        if self.terminal is None:
            self.collect_spool()
        self.server.on_exit(self, status)

    def collect_spool(self) -> None:
        """SPOOL-3: check the hello like a connection's, apply the rest like one, delete it."""
        path = self.rec.spool_path
        try:
            with open(path, "rb") as f:
                lines = [line for line in f.read().split(b"\n") if line.strip()]
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("job %s: cannot read spool file %s: %s", self.job_id, path, exc)
            return
        try:
            hello = decode(lines[0]) if lines else None
        except RemoteProtocolError:
            hello = None
        if (
            hello is None
            or hello.type != "hello"
            or hello.job_id != self.job_id
            or not secrets.compare_digest(str(hello.body["token"]).encode(), self.token.encode())
        ):
            log.warning(
                "job %s: spool file %s fails the hello check (AUTH-4); kept as .rejected",
                self.job_id,
                path,
            )
            os.replace(path, path + ".rejected")
            return
        peer = SpoolPeer(self.job_id, frozenset(hello.body["features"]))
        messages = []
        for line in lines[1:]:
            try:
                messages.append(decode(line))
            except RemoteProtocolError as exc:
                peer.reject(exc)
        if messages:
            self.receive(peer, messages)
            if not self.server.recorder.flush():
                return  # keep the file: the next start collects it again
        os.unlink(path)
        log.info("job %s: collected spool file with %d messages", self.job_id, len(messages))

    def close(self) -> None:
        """Let go of the socket, the connections and the timers (not of the worker)."""
        for name, handle in list(self.timers.items()):
            if name != "kill" or not self.exited:
                handle.cancel()
                del self.timers[name]
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for conn in tuple(self.connections):
            conn.close()
        self.discards.close()


def _log_event(entry: NewLog) -> dict[str, Any]:
    return {
        "level": entry.level,
        "message": entry.message,
        "data": entry.data,
        "source": entry.source,
    }

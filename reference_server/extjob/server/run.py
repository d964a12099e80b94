"""One running attempt: its socket, its process, its deadlines, its messages.

An ``AttemptRun`` exists from spawn (or re-adoption after a restart) until
the worker process has exited and the outcome is recorded. What the protocol
says (binding, replies, REPLAY-5, silence, cancel, the outcome) is decided by
the core's ``ServerAttempt`` and ``outcome``; this module does the I/O
around it: the listener, the store, the timers, the signals. It talks upward
only through ``Host``. Deadlines are timer handles on the event loop's
monotonic clock (HB-3): the stale watchdog is rescheduled only when it
fires, never per message, so a heartbeat costs one float store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import operator
import os
import select
import signal
import subprocess
from collections.abc import Callable, Mapping
from itertools import groupby, repeat
from typing import Any, Protocol

import orjson

from extjob.protocol import (
    Exit,
    Intake,
    Message,
    Outcome,
    Retry,
    ServerAttempt,
    heartbeat_timeout,
    outcome,
    timed_out,
)

from .config import JobDefinition, ServerConfig
from .connection import WorkerConnection
from .events import EventBus
from .models import Metrics, now_ms
from .output import OutputTail
from .private import private_socket
from .procs import ExitWatcher, group_alive, signal_group, start_time
from .ratelimit import LogLimiter
from .recorder import Recorder
from .resources import Backoff, out_of_descriptors
from .store import AttemptRecord, Batch, NewLog, Record, SetPid, Store
from .wire import WireLog

log = logging.getLogger(__name__)

Events = list[tuple[str, dict[str, Any]]]
PROGRESS_EVENT = "job.external.progress"
_type_of = operator.attrgetter("type")
_body_of = operator.attrgetter("body")

# Loop iterations from the accept of a connection to its first read.
_ACCEPT_ITERATIONS = 4


class Host(Protocol):
    """What a run needs from the server that owns it."""

    config: ServerConfig
    metrics: Metrics
    events: EventBus
    recorder: Recorder

    @property
    def store(self) -> Store: ...
    def emit(self, name: str, run: AttemptRun, data: Mapping[str, Any]) -> None: ...
    def finish(self, run: AttemptRun, result: Outcome) -> None: ...
    def release(self, run: AttemptRun) -> None: ...
    def abandon(self, run: AttemptRun) -> None: ...


class AttemptRun:
    def __init__(
        self, host: Host, definition: JobDefinition, rec: AttemptRecord, *, adopted: bool
    ) -> None:
        self.host = host
        self.definition = definition
        self.rec = rec
        self.job_id = rec.job_id
        self.name = definition.name
        self.metrics = host.metrics
        self.loop = asyncio.get_running_loop()
        config = host.config
        self.attempt = ServerAttempt(
            rec.job_id,
            rec.token,
            now=self.loop.time(),  # spawn, or restart: START-1, RECONNECT-5
            heartbeat_timeout_ms=definition.heartbeat_timeout_ms,
            max_line_bytes=config.max_line_bytes,
            require_hello=config.require_hello,
            recorded_seq=rec.last_seq,
            terminal=dict(rec.terminal) if rec.terminal else None,
            adopted=adopted,
        )
        self.attempt.cancel_requested = rec.cancel_requested
        self.next_index = rec.log_count + 1
        self.connections: set[WorkerConnection] = set()
        self.fail_reason: str | None = None  # what the server did that fails the attempt
        self.killed_by: str | None = None
        self.finalized = False
        self.abandoned = False  # fenced: the job is another attempt's now
        self.exited = False
        self.exit_status: int | None = None  # as the exit watcher saw it; None: unknown
        self.tails = {
            "stdout": OutputTail(rec.out_path, rec.out_offset),
            "stderr": OutputTail(rec.err_path, rec.err_offset),
        }
        self.listener: asyncio.Server | None = None
        self.watcher: ExitWatcher | None = None
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.done = self.loop.create_future()
        self.wants_progress = True
        self.committing: set[str] = set()  # output files with lines on their way to the store
        self.events_waiting = 0  # reads whose events wait for their commit
        self.wire = WireLog(rec.spawned_at)  # the dashboard's view (wire.py)
        # Per attempt, not per connection: a v1 worker may connect once per message.
        self.discards = LogLimiter(log, f"lines discarded from job {self.job_id}", loop=self.loop)

    # setup

    async def listen(self) -> None:
        """Listen on the attempt's own socket, mode 0600 (TRANS-2)."""
        self.listener = await self.loop.create_unix_server(
            lambda: WorkerConnection(self.attempt.connect(), self, self.loop.time),
            sock=private_socket(self.rec.socket_path),
        )

    def watch(self, child: subprocess.Popen[bytes] | None = None) -> None:
        self.watcher = ExitWatcher(self.rec.pid, self._on_exit, child)

    def adopt(self, pid: int, child: subprocess.Popen[bytes] | None = None) -> None:
        """Record the worker's identity (PID and start time) and watch for its exit."""
        started = start_time(pid) or 0
        self.rec = dataclasses.replace(self.rec, pid=pid, pid_start=started)
        self.host.recorder.add(SetPid(self.job_id, self.rec.attempt, pid, started), self._fenced)
        self.watch(child)

    def _fenced(self, ok: bool | None) -> None:
        if ok is False:
            self.host.abandon(self)

    def start_deadlines(self) -> None:
        """Watch for silence and the timeout; decide what a restart left undecided."""
        if self.attempt.terminal is not None:
            self._decide(None)  # recorded, but the server died before the outcome
            return
        self._check_stale()
        if self.definition.timeout_ms:
            deadline = self.rec.spawned_at + self.definition.timeout_ms / 1000
            self._at("timeout", deadline, self._timed_out)
        if self.attempt.cancel_requested:
            self.cancel("requested")  # asked before the restart

    # connections (connection.Receiver)

    def opened(self, conn: WorkerConnection) -> None:
        self.connections.add(conn)

    def closed(self, conn: WorkerConnection) -> None:
        self.connections.discard(conn)

    async def settled(self) -> None:
        """What was read so far is stored (or failed to be)."""
        await self.host.recorder.flush()

    def sent(self, data: bytes) -> None:
        for line in data.splitlines():
            self.wire.sent(orjson.loads(line))

    def deliver(self, conn: WorkerConnection | None, intake: Intake) -> None:
        """Apply one read: record, then ack, then emit (REPLAY-2).

        Progress events alone may go out before the record, and a run of
        progress in one read is one event (``_emit_progress``).
        """
        if intake.bound is not None:
            if intake.hello is not None:
                self.wire.hello(intake.hello)
            self.wire.negotiated(intake.connection.features)
            if conn is not None:
                conn.flush()  # the welcome, before what follows it
        if intake.received:
            self.wire.received(intake.received, intake.size)
        if intake.rejected or intake.refused is not None:
            self._log_discarded(intake)
        if intake.reconnected:
            self.metrics.reconnects += 1
            self.host.emit("job.reconnected", self, {})
        for rule, message in intake.tolerated:
            log.info("job %s: tolerated %s (%s)", self.job_id, message.type, rule)
        self.metrics.messages_received += len(intake.received)
        if not intake:  # only heartbeats or duplicates: nothing to store, maybe re-ack
            self._recorded(True, conn, intake, [], None)
            return
        self.wants_progress = self.host.events.wants(PROGRESS_EVENT)
        batch = Batch()
        events: Events = []
        for kind, run in groupby(intake.messages, _type_of):
            if kind == "progress":  # the hot path: a run of them is its latest (SRV-3)
                self._collect_progress(list(run), batch, events)
            else:
                for message in run:
                    self._collect(message, batch, events)
        if events and events[0][0] == PROGRESS_EVENT and not self.events_waiting:
            # Progress is not part of the exactly-once record, so the progress
            # that leads this read need not wait for the commit: emitted at
            # once, it reaches subscribers without the store's latency; unless
            # events of an earlier read still wait for their commit (the order).
            self.host.emit(PROGRESS_EVENT, self, events.pop(0)[1])
        if intake.last_seq > self.attempt.recorded_seq:
            batch.last_seq = intake.last_seq
        first = self.next_index
        self.next_index += len(batch.logs)
        if events:
            self.events_waiting += 1
        intake.release()  # what the store and the events need is in batch and events
        self.host.recorder.add(
            Record(self.job_id, self.rec.attempt, first, batch),
            lambda ok: self._recorded(ok, conn, intake, events, batch),
        )

    def _log_discarded(self, intake: Intake) -> None:
        """SRV-6: every discarded line with its reason."""
        for rejection in intake.rejected:
            error = rejection.error
            self.discards.warn(
                error.code, "job %s: discarded line: %s %s", self.job_id, error.code, error
            )
        refused = intake.refused
        if refused is not None:
            self.discards.warn(
                refused.requirement, "job %s: refused connection: %s", self.job_id, refused
            )
        self.metrics.invalid_lines += len(intake.rejected) + (refused is not None)

    def _recorded(
        self,
        ok: bool | None,
        conn: WorkerConnection | None,
        intake: Intake,
        events: Events,
        batch: Batch | None,
    ) -> None:
        """After the store: ack (REPLAY-2), then emit; or forget what was not stored."""
        if events:
            self.events_waiting -= 1
        if ok is False:
            self.host.abandon(self)
            return
        if not ok:
            self.attempt.not_recorded(intake)
            for each in tuple(self.connections):
                each.close()  # the worker reconnects and replays from what is stored
            # What this attempt read after it was queued is replayed too: not stored now.
            self.host.recorder.discard(self.job_id)
            return
        self.attempt.recorded(intake)
        if conn is not None:
            conn.flush()
        for name, data in events:
            self.host.emit(name, self, data)
        if intake.terminal is not None:
            self._decide(None)  # SRV-4

    def _collect_progress(self, run: list[Message], batch: Batch, events: Events) -> None:
        """Progress messages that follow one another: the store keeps the latest
        (SRV-3), with the message of an earlier one when the latest has none
        (MSG-4), and subscribers get one event for them (``_emit_progress``)."""
        latest = run[-1].body
        message = latest.get("message")
        if message is None and len(run) > 1:  # bodies are dicts, as decode makes them
            texts = list(map(dict.get, map(_body_of, run), repeat("message")))
            if texts.count(None) < len(texts):
                message = next(text for text in reversed(texts) if text is not None)
        progress = (latest["percent"], message, latest.get("data"))
        if message is None and batch.progress is not None:
            batch.progress = (progress[0], batch.progress[1], progress[2])  # MSG-4
        else:
            batch.progress = progress
        if self.wants_progress:
            self._emit_progress(progress, events)

    def _collect(self, message: Message, batch: Batch, events: Events) -> None:
        body = message.body
        kind = message.type
        if kind == "log":
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

    def _emit_progress(self, progress: tuple[Any, Any, Any], events: Events) -> None:
        """Progress is state, the latest wins: progress messages that follow
        one another in one read become one event, the latest (SRV-3), with
        the message of an earlier one carried over when the latest has none
        (MSG-4). Any other event between them keeps its place: logs, state
        changes and terminals are never coalesced, and keep their order."""
        percent, message, data = progress
        event = {"percent": percent, "message": message, "data": data}
        if events and events[-1][0] == PROGRESS_EVENT:
            if message is None:
                event["message"] = events[-1][1]["message"]
            events[-1] = (PROGRESS_EVENT, event)
        else:
            events.append((PROGRESS_EVENT, event))

    def commit(self, batch: Batch, done: Callable[[bool | None], None]) -> None:
        """Queue a batch of the server's own making (output lines, notes) for the store."""
        if self.abandoned:
            return
        first = self.next_index
        self.next_index += len(batch.logs)

        def stored(ok: bool | None) -> None:
            if ok is None:
                log.error("job %s: could not record %d log entries", self.job_id, len(batch.logs))
            elif not ok:
                self.host.abandon(self)
            done(ok)

        self.host.recorder.add(Record(self.job_id, self.rec.attempt, first, batch), stored)

    def note(self, level: str, message: str) -> None:
        """A log entry from the server itself about this job (kill steps, exit warnings)."""
        entry = NewLog(now_ms(), level, message, None, "server")

        def stored(ok: bool | None) -> None:
            if ok:
                self.host.emit("job.external.log", self, _log_event(entry))

        self.commit(Batch(logs=[entry]), stored)

    def poll_output(self, final: bool = False) -> bool:
        """Take new stdout/stderr lines into the log (SRV-7), with their file offsets;
        False if a file could not be read for want of descriptors.

        One batch per file is on its way to the store at a time; if it is not
        stored, the file is read again from where that batch began."""
        read_all = True
        for source, tail in self.tails.items():
            if source in self.committing:
                continue
            start = tail.offset
            lines: list[str] = []
            while chunk := tail.read_lines(final):
                lines += chunk
                if not final:
                    break
            read_all = read_all and chunk is not None
            if not lines:
                continue
            level = "info" if source == "stdout" else "error"
            entries = [NewLog(now_ms(), level, line, None, source) for line in lines]  # type: ignore[arg-type]
            batch = Batch(logs=entries)
            setattr(batch, "out_offset" if source == "stdout" else "err_offset", tail.offset)
            self.committing.add(source)

            def stored(
                ok: bool | None,
                source: str = source,
                start: int = start,
                entries: list[NewLog] = entries,
            ) -> None:
                self.committing.discard(source)
                if not ok:
                    self.tails[source].offset = start  # read them again next time
                    return
                for entry in entries:
                    self.host.emit("job.external.log", self, _log_event(entry))

            self.commit(batch, stored)
        return read_all

    async def read_output_to_the_end(self) -> None:
        """Every line the worker wrote reaches the log before its files go (SRV-7).

        Out of descriptors (a flood of connections, say), the read is tried
        again until it works: dropping the lines with the files would lose
        what the job printed last, often the reason it failed.
        """
        await self.host.recorder.flush()
        backoff = Backoff(first=0.05, cap=2.0)
        while not self.poll_output(final=True):
            delay = backoff.failed()
            if delay == backoff.first:
                log.warning(
                    "job %s: out of file descriptors reading its output; trying again", self.job_id
                )
            await asyncio.sleep(delay)
        await self.host.recorder.flush()

    # deadlines

    def _at(self, name: str, when: float, callback: Callable[[], None]) -> None:
        old = self.timers.pop(name, None)
        if old is not None:
            old.cancel()
        self.timers[name] = self.loop.call_at(when, callback)

    def _check_stale(self) -> None:
        """STALE-1 once per silence, STALE-2 at twice the timeout (decided by the core)."""
        if self.exited:
            return
        silence = self.attempt.check_silence(self.loop.time())
        if silence.action == "kill":
            self.terminate(heartbeat_timeout(silence.silence_ms))
            return
        if silence.action == "stale":
            self.metrics.stale_count += 1
            self.host.emit("job.stale", self, {"timeSinceHeartbeat": silence.silence_ms})
        if silence.next_at is not None:
            self._at("stale", silence.next_at, self._check_stale)

    def _timed_out(self) -> None:
        """TIMEOUT-1: cancel with reason timeout; KILL-1 follows at the cancel deadline."""
        if self.fail_reason is None:
            self.fail_reason = timed_out(self.definition.timeout_ms or 0)
        self.cancel("timeout")

    @property
    def cancellable(self) -> bool:
        """A user may still cancel it (not finished, not asked before)."""
        return not self.finalized and not self.attempt.cancel_requested

    def cancel(self, reason: str) -> None:
        """CANCEL-1/2: a cancel message when control was negotiated, else KILL-1 at once."""
        if self.exited:
            self.attempt.cancel_requested |= reason == "requested"
            return
        deadline_ms = self.definition.cancel_deadline_ms
        step = self.attempt.cancel(reason, deadline_ms)
        if step == "sent":
            for conn in tuple(self.connections):
                conn.flush()
            self._at("cancel", self.loop.time() + deadline_ms / 1000, self.terminate)
        elif step == "kill":
            self.terminate()

    def terminate(self, reason: str | None = None) -> None:
        """KILL-1: SIGTERM to the process group, SIGKILL after the grace if any of it remains."""
        if reason is not None and self.fail_reason is None:
            self.fail_reason = reason
        if self.killed_by is not None or self.exited:
            return
        self.metrics.killed_count += 1
        self.killed_by = "SIGTERM"
        why = reason or self.attempt.cancel_reason or "ended"
        if signal_group(self.rec.pid, signal.SIGTERM):
            self.note("warn", f"terminating: SIGTERM sent ({why})")
        grace = self.definition.kill_grace_ms / 1000
        self._at("kill", self.loop.time() + grace, self._kill)

    def _kill(self) -> None:
        if group_alive(self.rec.pid):
            signal_group(self.rec.pid, signal.SIGKILL)
            self.killed_by = "SIGKILL"
            if not self.finalized:
                self.note("warn", "SIGKILL sent: the process group outlived the kill grace")

    def _after_outcome(self) -> None:
        """The outcome is recorded: stop watching for silence, but expect an exit (EXIT-3)."""
        for name in ("stale", "timeout", "cancel"):
            handle = self.timers.pop(name, None)
            if handle is not None:
                handle.cancel()
        if not self.exited:
            self._at("exit", self.attempt.exit_deadline(self.loop.time()), self._linger)

    def _linger(self) -> None:
        self.note("warn", "the worker did not exit after its terminal message (EXIT-3)")
        self.terminate()

    # the outcome

    def _decide(self, exit: Exit | None, *, retryable: bool = True) -> None:
        """EXIT-1, SRV-4, CANCEL-4, TIMEOUT-1, CKPT-4: decided once, by the core."""
        rec = self.rec
        result = outcome(
            self.attempt.terminal,
            exit,
            cancel_requested=self.attempt.cancel_requested,
            failure=self.fail_reason,
            retryable=retryable,
            retry=Retry(
                rec.attempt,
                rec.max_attempts,
                self.definition.retry_backoff_ms,
                self.definition.max_retry_backoff_ms,
            ),
        )
        if result.warning:
            self.note("warn", result.warning)
        if self.finalized:
            return  # LIFE-4: once; a later exit only adds its warning
        self.finalized = True
        self.host.finish(self, result)
        self._after_outcome()

    def spawn_failed(self, exc: OSError) -> None:
        self.exited = True
        self.fail_reason = f"spawn failed: {exc}"
        self._decide(Exit(None), retryable=False)
        self._release()

    async def gone(self) -> None:
        """After a restart the worker was not there any more: collect what it left."""
        self.exited = True
        await self.read_output_to_the_end()
        if self.attempt.terminal is None:
            await self.collect_spool()
        self._decide(Exit(None, lost=True))
        self._release()

    def _on_exit(self, status: int | None) -> None:
        self.watcher = None
        self.exited = True
        self.exit_status = status
        self.loop.create_task(self._collect_exit(status))

    async def _collect_exit(self, status: int | None) -> None:
        """EXIT-1: read what is still buffered, collect the spool file, then decide."""
        # The worker's end is closed by its exit; a child that inherited the
        # socket could keep it open, so do not wait for it forever. A worker
        # that connected, wrote and exited at once may not be accepted yet:
        # in the listener's backlog, or taken from it by the loop, whose
        # accept runs as a task over the next iterations (the yields below).
        deadline = self.loop.time() + 1.0
        starved = False
        for _ in range(_ACCEPT_ITERATIONS):
            await asyncio.sleep(0)
        while True:
            pending = [conn.closed for conn in self.connections if not conn.closed.done()]
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - self.loop.time()))
            if not self._unaccepted():
                break
            if self.loop.time() < deadline:
                await asyncio.sleep(0.005)
                continue
            if not out_of_descriptors():
                break
            # The loop cannot accept the waiting connection for want of
            # descriptors; its messages would go with it. Wait until it can,
            # and give it time then (asyncio tries the accept again 1 s on).
            if not starved:
                log.warning("job %s: out of file descriptors accepting its connection", self.job_id)
                starved = True
            deadline = self.loop.time() + 2.0
            await asyncio.sleep(0.05)
        await self.read_output_to_the_end()
        if self.attempt.terminal is None:
            await self.collect_spool()
        self._decide(Exit(status))
        self._release()

    def _unaccepted(self) -> bool:
        """A connection waits in the listener's backlog."""
        listener = self.listener
        if listener is None:
            return False
        # poll, not select: select() refuses a descriptor above 1023, which a
        # server with a few hundred jobs has, and the exit was never decided.
        poller = select.poll()
        for sock in listener.sockets:
            poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    async def collect_spool(self) -> None:
        """SPOOL-3: the core checks the hello and applies the rest like a connection's."""
        path = self.rec.spool_path
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("job %s: cannot read spool file %s: %s", self.job_id, path, exc)
            return
        intake = self.attempt.apply_spool(data, self.loop.time())
        if intake is None:
            log.warning(
                "job %s: spool file %s fails the hello check (AUTH-4); kept as .rejected",
                self.job_id,
                path,
            )
            os.replace(path, path + ".rejected")
            return
        count = len(intake.received)
        self.deliver(None, intake)
        if intake and not await self.host.recorder.flush():
            return  # keep the file: the next start collects it again
        os.unlink(path)
        log.info("job %s: collected spool file with %d messages", self.job_id, count)

    def _release(self) -> None:
        """The attempt is over: let go of everything and tell the host."""
        self.close()
        for path in (self.rec.socket_path, self.rec.out_path, self.rec.err_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        if not self.done.done():
            self.done.set_result(None)
        self.host.release(self)

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

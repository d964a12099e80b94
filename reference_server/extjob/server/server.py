"""The job server: queue, scheduler, spawning, outcomes, restart recovery.

``JobServer`` is the facade embedding code and the HTTP API use. Each running
attempt is a ``run.Run``; this module decides what happens to the *job*:
claims (atomic in the store), spawns, retries (CKPT-4), outcomes (SRV-4,
EXIT-1, CANCEL-4) and, on start, what becomes of the attempts a previous
server process left running (re-adopted, collected from their spool file, or
failed as lost).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from extjob.protocol import (
    FEATURES,
    MAX_PAYLOAD_BYTES,
    PROTOCOL_VERSION,
    heartbeat_interval_ms,
    retry_delay_ms,
)

from .config import JobDefinition, ServerConfig
from .environment import worker_environment
from .events import EventBus
from .models import Job, Metrics, now_ms
from .private import private_dir
from .procs import describe_status, find_worker, is_same_process, spawn
from .recorder import Recorder
from .resources import Backoff, is_transient
from .run import Run
from .store import (
    AttemptRecord,
    AttemptSummaries,
    FeaturesByJob,
    Jobs,
    LogEntries,
    SQLiteStore,
    Store,
)

log = logging.getLogger(__name__)

OUTPUT_POLL_INTERVAL = 0.2  # seconds between looks at the workers' stdout/stderr files


class JobServer:
    """Runs external jobs per ``protocol/SPEC.md``; see the package docstring."""

    def __init__(self, config: ServerConfig, store: Store | None = None) -> None:
        self.config = config
        self.jobs: dict[str, JobDefinition] = dict(config.jobs)
        self._store = store
        self.events = EventBus()
        self.metrics = Metrics()
        self.runs: dict[str, Run] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._stopping = False
        self._closed: asyncio.Future[None] | None = None
        self._spawn_backoff = Backoff()
        self._spawn_paused_until = 0.0

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the server is not started")
        return self._store

    # definitions

    def register(self, definition: JobDefinition) -> None:
        self.jobs[definition.name] = definition
        self._wake.set()

    def register_external(self, name: str, command: str, **options: Any) -> JobDefinition:
        """Define (or redefine) a job name; options are the JobDefinition fields."""
        if "args" in options:
            options["args"] = tuple(options["args"])
        definition = JobDefinition(name=name, command=command, **options)
        self.register(definition)
        return definition

    # lifecycle

    async def start(self) -> None:
        private_dir(self.config.socket_dir, "socket_dir")  # TRANS-2
        private_dir(self.config.spool_dir, "spool_dir")  # SPOOL-1, and the workers' output
        if self._store is None:
            self._store = SQLiteStore(self.config.database)
        self.recorder = Recorder(self._store)
        self._closed = asyncio.get_running_loop().create_future()
        await self._recover()
        self._tasks = [
            asyncio.create_task(self._schedule(), name="extjob-scheduler"),
            asyncio.create_task(self._poll_output(), name="extjob-output"),
        ]

    async def stop(self, drain: bool = False) -> None:
        """Stop. Workers keep running unless ``drain``, which waits for them to finish first."""
        if self._stopping:
            await self.wait_closed()
            return
        self._draining = True
        if drain:
            while self.runs:
                await asyncio.wait([run.done for run in self.runs.values()])
        self._stopping = True
        self._wake.set()
        scheduler, output = self._tasks
        await scheduler
        output.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await output
        exiting = [run.done for run in self.runs.values() if run.exited]
        if exiting:
            await asyncio.wait(exiting, timeout=2.0)
        self.recorder.flush()
        for run in list(self.runs.values()):
            if not run.exited:
                run.poll_output()  # so the restarted server resumes at the right offset
            run.close()
        self.runs.clear()
        if self._store is not None:
            self._store.close()
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        if self._closed is not None:
            await asyncio.shield(self._closed)

    async def __aenter__(self) -> JobServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # the queue

    async def enqueue(
        self,
        name: str,
        data: Any = None,
        *,
        max_attempts: int | None = None,
        run_at: float | datetime.datetime | None = None,
        priority: int = 0,
    ) -> str:
        """Queue a job; returns its id. KeyError for an unknown name, ValueError for bad options."""
        definition = self.jobs.get(name)
        if definition is None:
            raise KeyError(f"no job definition named {name!r}")
        if max_attempts is None:
            max_attempts = definition.max_attempts
        if not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValueError(f"priority must be an integer, got {priority!r}")
        created = now_ms()
        if run_at is None:
            due = created
        elif isinstance(run_at, datetime.datetime):
            due = int(run_at.timestamp() * 1000)
        elif (
            isinstance(run_at, int | float)
            and not isinstance(run_at, bool)
            and math.isfinite(run_at)
        ):
            due = int(run_at)
        else:
            raise ValueError(f"run_at must be epoch milliseconds or a datetime, got {run_at!r}")
        try:
            size = len(json.dumps(data, allow_nan=False, ensure_ascii=False).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"data is not JSON: {exc}") from exc
        if size > MAX_PAYLOAD_BYTES - 64 * 1024:  # room for the payload's other fields
            raise ValueError(
                f"data is {size} bytes; the payload limit is {MAX_PAYLOAD_BYTES} (LIMIT-2)"
            )
        job_id = f"j_{secrets.token_hex(8)}"
        self.store.create(
            Job.pending(
                job_id,
                name,
                data,
                max_attempts=max_attempts,
                priority=priority,
                run_at=due,
                created_at=created,
            )
        )
        self._wake.set()
        return job_id

    async def get(self, job_id: str) -> Job | None:
        return self.store.get(job_id)

    async def list(
        self,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> Jobs:
        """Newest first; ``before``: a job id, to page on after the last one seen."""
        return self.store.list(status, name, limit, before)

    async def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> LogEntries:
        return self.store.logs(job_id, after, limit)

    async def running(self) -> Jobs:
        return self.store.list("running", None, 1_000_000)

    async def counts(self, name: str | None = None) -> dict[str, int]:
        return self.store.counts(name)

    async def current_features(self, job_ids: Sequence[str]) -> FeaturesByJob:
        """NEG-2 per job: from memory for the attempts this server runs, else as stored."""
        features = self.store.current_features(job_ids)
        for job_id in job_ids:
            run = self.runs.get(job_id)
            if run is not None and run.wire.features is not None:
                features[job_id] = run.wire.features
        return features

    async def attempts(self, job_id: str, after: int = 0, limit: int = 100) -> AttemptSummaries:
        """The job's attempts; a running attempt of this server has its features
        and wire log from memory (they are stored when its worker exits)."""
        attempts = self.store.attempts(job_id, after, limit)
        run = self.runs.get(job_id)
        if run is None:
            return attempts
        return [
            dataclasses.replace(a, features=run.wire.features, wire=run.wire.snapshot())
            if a.attempt == run.rec.attempt and a.exited_at is None
            else a
            for a in attempts
        ]

    async def cancel(self, job_id: str) -> bool:
        """Cancel a pending job at once, or a running one of this server (CANCEL-1)."""
        if self.store.cancel_pending(job_id, now_ms()):
            job = self.store.get(job_id)
            self.events.emit(
                "job.cancelled", job_id, {"jobId": job_id, "name": job.name if job else ""}
            )
            return True
        run = self.runs.get(job_id)
        if run is None or run.finalized or run.cancel_reason == "requested":
            return False
        self.store.request_cancel(job_id)  # so that a restarted server still cancels it
        if run.cancel_reason is None:
            run.cancel("requested")
        run.cancel_reason = "requested"  # also when a timeout's cancel is under way
        return True

    # events, outcomes

    def emit(self, name: str, run: Run, data: Mapping[str, Any]) -> None:
        if self.events.wants(name):
            self.events.emit(name, run.job_id, {"jobId": run.job_id, "name": run.name, **data})

    def on_terminal(self, run: Run) -> None:
        """SRV-4: a terminal message was recorded."""
        body = run.terminal
        assert body is not None
        if body["type"] == "completed":
            self._finalize(run, "completed", result=body.get("result"))
        else:
            self._finalize(
                run,
                "failed",
                error=run.fail_reason or body["error"],
                stack=body.get("stack"),
                retryable=body.get("retryable") is not False,
            )

    def on_exit(self, run: Run, status: int | None, lost: bool = False) -> None:
        """EXIT-1, after the connection and the spool file were read."""
        if run.terminal is None and not run.finalized:
            if lost:
                reason = run.fail_reason or (
                    "worker gone after a server restart: no terminal message, exit status unknown"
                )
                self.metrics.lost += 1
                self.emit("job.lost", run, {"reason": reason})
                self._finalize(run, "failed", error=reason)
            elif run.fail_reason is not None:
                self._finalize(run, "failed", error=run.fail_reason)
            elif run.cancel_reason == "requested":
                self._finalize(run, "cancelled")
            elif status == 0:
                run.note("warn", "exited 0 without a terminal message")
                self._finalize(run, "completed")
            elif status is None:
                self._finalize(
                    run,
                    "failed",
                    error="worker exited without a terminal message; exit status unknown "
                    "(re-adopted after a server restart, not a child of this server)",
                )
            else:
                self._finalize(run, "failed", error=describe_status(status))
        elif run.terminal is not None and run.terminal["type"] == "completed" and status:
            run.note("warn", f"completed, then: {describe_status(status)}")
        self._end_attempt(run, status)
        run.close()
        for path in (run.rec.socket_path, run.rec.out_path, run.rec.err_path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.runs.pop(run.job_id, None)
        if not run.done.done():
            run.done.set_result(None)
        self._wake.set()

    def _end_attempt(self, run: Run, status: int | None) -> None:
        # One write per attempt, when its worker is gone: never per message.
        try:
            self.store.end_attempt(
                run.job_id,
                run.rec.attempt,
                now_ms(),
                status,
                run.wire.features,
                run.wire.snapshot(),
            )
        except Exception:
            log.exception("job %s: could not record the end of its attempt", run.job_id)

    def _finalize(
        self,
        run: Run,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        stack: str | None = None,
        retryable: bool = True,
    ) -> None:
        """Record the attempt's outcome once (LIFE-4) and emit its events."""
        if run.finalized:
            return
        run.finalized = True
        rec = run.rec
        if status == "failed" and run.cancel_reason == "requested":
            status = "cancelled"  # CANCEL-4
        retry_at = None
        if status == "failed" and retryable and rec.attempt < rec.max_attempts:
            definition = run.definition
            delay = retry_delay_ms(
                rec.attempt, definition.retry_backoff_ms, definition.max_retry_backoff_ms
            )
            retry_at = now_ms() + delay
        self.store.finish(
            run.job_id, status, now_ms(), result=result, error=error, stack=stack, retry_at=retry_at
        )
        if status == "completed":
            data: dict[str, Any] = {"result": result}
        elif status == "failed":
            data = {"error": error, "stack": stack, "attempt": rec.attempt, "retryAt": retry_at}
        else:
            data = {}
        if status == "cancelled":
            self.emit("job.cancelled", run, data)
        else:
            self.emit(f"job.{status}", run, data)
            self.emit(f"job.{run.name}.{status}", run, data)
        run.after_terminal()
        self._wake.set()

    # scheduling and spawning

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        poll = self.config.poll_interval_ms / 1000
        while not self._stopping:
            self._wake.clear()
            wait = poll
            try:
                while (
                    not self._draining
                    and len(self.runs) < self.config.concurrency
                    and loop.time() >= self._spawn_paused_until
                ):
                    claimed = self.store.claim(
                        self.config.server_id, now_ms(), self._limits(), self._prepare
                    )
                    if claimed is None:
                        break
                    await self._spawn(*claimed)
                due = self.store.next_run_at(list(self.jobs))
                if due is not None:
                    wait = min(wait, max(0.005, (due - now_ms()) / 1000))
                if self._spawn_paused_until > loop.time():
                    wait = max(wait, self._spawn_paused_until - loop.time())
            except Exception:
                # A store error (a locked or full disk, say) must not end
                # scheduling for good: log it and try again after the poll.
                log.exception("scheduler: could not claim or spawn; retrying")
            # Not asyncio.wait_for: on 3.11 it can swallow the cancellation of
            # a wait that completes at the same moment; stop() sets _stopping
            # and wakes us instead.
            timer = loop.call_later(wait, self._wake.set)
            await self._wake.wait()
            timer.cancel()

    def _limits(self) -> dict[str, int]:
        """Per-name limits for a claim (0: none). A finished job whose worker has
        not exited yet still holds its slot, though the store no longer counts it."""
        lingering = collections.Counter(r.name for r in self.runs.values() if r.finalized)
        limits = {}
        for name, definition in self.jobs.items():
            if not definition.concurrency:
                limits[name] = 0
            elif definition.concurrency > lingering[name]:
                limits[name] = definition.concurrency - lingering[name]
        return limits

    def _prepare(self, job: Job) -> AttemptRecord:
        """The new attempt's token and paths (stored with the claim)."""
        stem = f"{job.id}.{job.attempt}"
        spool = os.path.abspath(self.config.spool_dir)
        return AttemptRecord(
            job_id=job.id,
            name=job.name,
            attempt=job.attempt,
            pid=0,
            pid_start=0,
            token=secrets.token_urlsafe(32),  # AUTH-1: 256 bits, fresh per attempt
            socket_path=os.path.join(os.path.abspath(self.config.socket_dir), f"{stem}.sock"),
            spool_path=os.path.join(spool, f"{stem}.spool"),
            out_path=os.path.join(spool, f"{stem}.out"),
            err_path=os.path.join(spool, f"{stem}.err"),
            spawned_at=asyncio.get_running_loop().time(),
            max_attempts=job.max_attempts,
        )

    async def _spawn(self, job: Job, rec: AttemptRecord) -> None:
        definition = self.jobs[job.name]
        run = Run(self, definition, rec, adopted=False)
        self.runs[job.id] = run
        payload_path = _payload_path(rec)
        try:
            await run.listen()
            _write_private(payload_path, json.dumps(self._payload(job, rec, definition)) + "\n")
            child = spawn(
                [definition.command, *definition.args],
                cwd=definition.cwd,
                env=self._worker_env(job, rec, definition),
                stdin_path=payload_path,
                out_path=rec.out_path,
                err_path=rec.err_path,
            )
        except OSError as exc:
            run.exited = True
            if is_transient(exc):
                self._spawn_later(run, exc)
                return
            self._finalize(run, "failed", error=f"spawn failed: {exc}", retryable=False)
            self.on_exit(run, None)
            return
        self.metrics.spawned += 1
        self._spawn_backoff.succeeded()
        run.adopt(child.pid, child)
        run.start_deadlines()

    def _spawn_later(self, run: Run, exc: OSError) -> None:
        """Out of descriptors, processes or memory for now: the job stays pending, not
        failed, and spawning pauses for a while (``resources.Backoff``)."""
        delay = self._spawn_backoff.failed()
        self._spawn_paused_until = asyncio.get_running_loop().time() + delay
        log.warning(
            "job %s: cannot spawn now (%s); it stays pending, next try in %.1f s",
            run.job_id,
            exc,
            delay,
        )
        run.close()
        for path in (
            run.rec.socket_path,
            run.rec.out_path,
            run.rec.err_path,
            _payload_path(run.rec),
        ):
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.runs.pop(run.job_id, None)
        run.done.set_result(None)
        self.store.unclaim(run.job_id)

    def _payload(self, job: Job, rec: AttemptRecord, definition: JobDefinition) -> dict[str, Any]:
        """PAY-2 and PAY-3: everything a worker needs, the secrets only here (ENV-3)."""
        payload = {
            "jobId": job.id,
            "name": job.name,
            "data": job.data,
            "socketPath": rec.socket_path,
            "protocolVersion": PROTOCOL_VERSION,
            "features": list(FEATURES),
            "heartbeatIntervalMs": heartbeat_interval_ms(definition.heartbeat_timeout_ms),
            "heartbeatTimeoutMs": definition.heartbeat_timeout_ms,
            "reconnectWindowMs": self.config.reconnect_window_ms,
            "maxLineBytes": self.config.max_line_bytes,
            "token": rec.token,
            "attempt": rec.attempt,
            "maxAttempts": rec.max_attempts,
            "spoolPath": rec.spool_path,
        }
        if job.checkpoint is not None:
            payload["checkpoint"] = job.checkpoint  # CKPT-2
        return payload

    def _worker_env(
        self, job: Job, rec: AttemptRecord, definition: JobDefinition
    ) -> dict[str, str]:
        env = worker_environment(self.config, definition.env)  # ENV-3
        env.update(  # ENV-1
            EXTJOB_JOB_ID=job.id,
            DONKEYLABS_JOB_ID=job.id,
            EXTJOB_JOB_NAME=job.name,
            DONKEYLABS_JOB_NAME=job.name,
            EXTJOB_SOCKET_PATH=rec.socket_path,
            DONKEYLABS_SOCKET_PATH=rec.socket_path,
            DONKEYLABS_TCP_PORT="",
        )
        return env

    async def _poll_output(self) -> None:
        while True:
            await asyncio.sleep(OUTPUT_POLL_INTERVAL)
            for run in list(self.runs.values()):
                if not run.exited:
                    run.poll_output()

    # restart

    async def _recover(self) -> None:
        """Find the attempts a previous server process left running (RECONNECT-5)."""
        runs = []
        for rec in self.store.running_attempts(self.config.server_id):
            definition = self.jobs.get(rec.name) or JobDefinition(name=rec.name, command="?")
            run = Run(self, definition, rec, adopted=True)
            self.runs[rec.job_id] = run
            await run.listen()  # every socket first, then decide who is lost
            runs.append(run)
        for run in runs:
            rec = run.rec
            if not rec.pid:
                # The previous server died between claiming and recording a PID.
                pid = find_worker(rec.job_id)
                if pid is not None:
                    log.info("job %s: found unrecorded worker pid %d", rec.job_id, pid)
                    run.adopt(pid)
                    run.start_deadlines()
                    continue
                if not os.path.exists(rec.spool_path):
                    log.info("job %s: claimed but never started; queued again", rec.job_id)
                    run.close()
                    del self.runs[rec.job_id]
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(_payload_path(rec))
                    self.store.unclaim(rec.job_id)
                    continue
            elif is_same_process(rec.pid, rec.pid_start):
                log.info("job %s: re-adopted worker pid %d", rec.job_id, rec.pid)
                run.watch()
                run.start_deadlines()
                if run.terminal is not None:
                    self.on_terminal(run)  # recorded, but the server died before the outcome
                continue
            run.exited = True
            run.poll_output(final=True)
            if run.terminal is None:
                run.collect_spool()
            if run.terminal is not None and not run.finalized:
                self.on_terminal(run)
            self.on_exit(run, None, lost=True)


def _payload_path(rec: AttemptRecord) -> str:
    return rec.out_path[: -len(".out")] + ".payload"


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)

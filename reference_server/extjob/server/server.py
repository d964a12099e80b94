"""The job server: queue, scheduler, spawning, outcomes, restart recovery.

``JobServer`` is the facade embedding code and the HTTP API use. Each running
attempt is a ``run.AttemptRun``, which reaches back only through the narrow
``run.Host`` (emit, finish, release). This module does what concerns the
*job*: claims (atomic in the store), spawns with the core's payload and
ENV-1 environment, stores each outcome the core decided (SRV-4, EXIT-1,
CANCEL-4, CKPT-4) and, on start, finds the attempts a previous server
process left running (RECONNECT-5).
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
import time
from collections.abc import Mapping, Sequence
from typing import Any

from extjob.protocol import (
    MAX_PAYLOAD_BYTES,
    Extensions,
    Outcome,
    build_payload,
    payload_environment,
)

from .cluster import EventFeed, Membership
from .config import JobDefinition, ServerConfig
from .environment import worker_environment
from .events import EventBus
from .models import Job, Metrics, now_ms
from .private import private_dir
from .procs import find_worker, is_same_process, spawn
from .recorder import Recorder
from .resources import Backoff, is_transient
from .run import AttemptRun
from .store import (
    AttemptRecord,
    AttemptSummaries,
    EndAttempt,
    FeaturesByJob,
    Finish,
    Jobs,
    LogEntries,
    Store,
    open_store,
)

log = logging.getLogger(__name__)

OUTPUT_POLL_INTERVAL = 0.2  # seconds between looks at the workers' stdout/stderr files
STOP_FLUSH_SECONDS = 10.0  # how long a stop waits for the store to take what is queued


class JobServer:
    """Runs external jobs per ``protocol/SPEC.md``; see the package docstring."""

    def __init__(self, config: ServerConfig, store: Store | None = None) -> None:
        self.config = config
        self.jobs: dict[str, JobDefinition] = dict(config.jobs)
        self._store = store
        self.membership: Membership | None = None
        self.events = EventBus()
        self.metrics = Metrics()
        self.runs: dict[str, AttemptRun] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._draining = False
        self._stopping = False
        self._closed: asyncio.Future[None] | None = None
        self._spawn_backoff = Backoff()
        self._spawn_paused_until = 0.0

    @property
    def event_feed(self) -> EventFeed | None:
        """The shared event log's feed (a shared store), once open; else None."""
        return self.membership.feed if self.membership is not None else None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the server is not started")
        return self._store

    # definitions

    def register(self, definition: JobDefinition) -> None:
        self.jobs[definition.name] = definition
        self._wake.set()

    def wake(self) -> None:
        """Look for claimable jobs now (another server enqueued, retried or freed a slot)."""
        self._wake.set()

    def register_external(self, name: str, command: str, **options: Any) -> JobDefinition:
        """Define (or redefine) a job name; options are the JobDefinition fields."""
        if "args" in options:
            options["args"] = tuple(options["args"])
        definition = JobDefinition(name=name, command=command, **options)
        self.register(definition)
        return definition

    # lifecycle

    async def open(self) -> None:
        """Open the store and join the cluster, before anything runs (``start`` does
        it too). The HTTP API opens first to number its events as the cluster does."""
        if self.membership is not None:
            return
        private_dir(self.config.socket_dir, "socket_dir")  # TRANS-2
        private_dir(self.config.spool_dir, "spool_dir")  # SPOOL-1, and the workers' output
        if self._store is None:
            self._store = await open_store(self.config.database)
        self.recorder = Recorder(self._store, self.config.server_id)
        membership = Membership(self)
        await membership.join()
        self.membership = membership

    async def start(self) -> None:
        await self.open()
        membership = self.membership
        assert membership is not None
        self._closed = asyncio.get_running_loop().create_future()
        await self._recover()
        self._tasks = [
            asyncio.create_task(self._schedule(), name="extjob-scheduler"),
            asyncio.create_task(self._poll_output(), name="extjob-output"),
        ]
        membership.start()

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
        await self.recorder.flush(STOP_FLUSH_SECONDS)
        for run in list(self.runs.values()):
            if not run.exited:
                run.poll_output()  # so the restarted server resumes at the right offset
        await self.recorder.flush(STOP_FLUSH_SECONDS)
        for run in list(self.runs.values()):
            run.close()
        # Workers left running keep the lease until it expires: a restart
        # within it re-adopts them, else other servers retry their jobs.
        if self.membership is not None:
            await self.membership.stop(leave=not self.runs)
        self.runs.clear()
        if self._store is not None:
            await self._store.close()
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
        await self.store.create(
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
        return await self.store.get(job_id)

    async def list(
        self,
        status: str | None = None,
        name: str | None = None,
        limit: int = 100,
        before: str | None = None,
    ) -> Jobs:
        """Newest first; ``before``: a job id, to page on after the last one seen."""
        return await self.store.list(status, name, limit, before)

    async def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> LogEntries:
        return await self.store.logs(job_id, after, limit)

    async def last_logs(self, job_id: str, limit: int = 1000) -> LogEntries:
        """The newest ``limit`` entries of the job's log, oldest first."""
        return await self.store.last_logs(job_id, limit)

    async def running(self) -> Jobs:
        return await self.store.list("running", None, 1_000_000)

    async def counts(self, name: str | None = None) -> dict[str, int]:
        return await self.store.counts(name)

    def is_stale(self, job_id: str) -> bool:
        """STALE-1: a running attempt of this server whose worker is silent too long."""
        run = self.runs.get(job_id)
        return run is not None and run.attempt.stale

    async def current_features(self, job_ids: Sequence[str]) -> FeaturesByJob:
        """NEG-2 per job: from memory for the attempts this server runs, else as stored."""
        features = await self.store.current_features(job_ids)
        for job_id in job_ids:
            run = self.runs.get(job_id)
            if run is not None and run.wire.features is not None:
                features[job_id] = run.wire.features
        return features

    async def attempts(self, job_id: str, after: int = 0, limit: int = 100) -> AttemptSummaries:
        """The job's attempts; a running attempt of this server has its features
        and wire log from memory (they are stored when its worker exits)."""
        attempts = await self.store.attempts(job_id, after, limit)
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
        """Cancel a pending job at once, or a running one (CANCEL-1) of any server:
        the request is stored, so that the server running it (told at once
        through the store, or when it restarts) cancels it."""
        if await self.store.cancel_pending(job_id, now_ms()):
            job = await self.store.get(job_id)
            self.events.emit(
                "job.cancelled", job_id, {"jobId": job_id, "name": job.name if job else ""}
            )
            return True
        run = self.runs.get(job_id)
        if run is None:
            return await self.store.request_cancel(job_id) is not None
        if not run.cancellable:
            return False
        await self.store.request_cancel(job_id)  # so that a restarted server still cancels it
        self.cancel_here(run)
        return True

    def cancel_here(self, run: AttemptRun) -> None:
        if run.cancellable:
            run.cancel("requested")  # also counts when a timeout's cancel is under way (CANCEL-4)

    def abandon(self, run: AttemptRun) -> None:
        """The store refused a write of ``run``: its attempt was declared lost and the
        job belongs to another attempt now. Stop its worker; record nothing more."""
        if run.abandoned:
            return
        log.warning(
            "job %s attempt %d: fenced (no longer current); stopping its worker",
            run.job_id,
            run.rec.attempt,
        )
        run.abandoned = run.finalized = True
        self.metrics.fenced += 1
        run.terminate("fenced: the attempt is no longer current")

    # events, outcomes

    def emit(self, name: str, run: AttemptRun, data: Mapping[str, Any]) -> None:
        if self.events.wants(name):
            self.events.emit(name, run.job_id, {"jobId": run.job_id, "name": run.name, **data})

    def finish(self, run: AttemptRun, result: Outcome) -> None:
        """Record an attempt's outcome (decided by the core: EXIT-1, SRV-4) and emit it."""
        if result.lost:
            self.metrics.lost += 1
            self.emit("job.lost", run, {"reason": result.error})
        retry_at = None if result.retry_in_ms is None else now_ms() + result.retry_in_ms
        if result.status == "completed":
            data: dict[str, Any] = {"result": result.result}
        elif result.status == "failed":
            data = {
                "error": result.error,
                "stack": result.stack,
                "attempt": run.rec.attempt,
                "retryAt": retry_at,
            }
        else:
            data = {}

        def stored(ok: bool | None) -> None:
            if not ok:  # refused (fenced): another attempt's outcome counts
                self.abandon(run)
                return
            if result.status == "cancelled":
                self.emit("job.cancelled", run, data)
            else:
                self.emit(f"job.{result.status}", run, data)
                self.emit(f"job.{run.name}.{result.status}", run, data)
            self._wake.set()

        finish = Finish(
            run.job_id,
            run.rec.attempt,
            result.status,
            now_ms(),
            result.result,
            result.error,
            result.stack,
            retry_at,
        )
        self.recorder.add(finish, stored)

    def release(self, run: AttemptRun) -> None:
        """The attempt's worker is gone and its outcome recorded: free its slot."""
        # One write per attempt, when its worker is gone: never per message.
        end = EndAttempt(
            run.job_id,
            run.rec.attempt,
            now_ms(),
            run.exit_status,
            run.wire.features,
            run.wire.snapshot(),
        )
        self.recorder.add(end, lambda ok: None)
        self.runs.pop(run.job_id, None)
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
                    claimed = await self.store.claim(
                        self.config.server_id, now_ms(), self._limits(), self._prepare
                    )
                    if claimed is None:
                        break
                    self.metrics.claims += 1
                    await self._spawn(*claimed)
                due = await self.store.next_run_at(list(self.jobs))
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
            # The loop's clock (a claim may run on the store's thread).
            spawned_at=time.monotonic(),
            max_attempts=job.max_attempts,
        )

    async def _spawn(self, job: Job, rec: AttemptRecord) -> None:
        definition = self.jobs[job.name]
        run = AttemptRun(self, definition, rec, adopted=False)
        self.runs[job.id] = run
        payload_path = _payload_path(rec)
        payload = self._payload(job, rec, definition)
        try:
            await run.listen()
            _write_private(payload_path, json.dumps(payload) + "\n")
            child = spawn(
                [definition.command, *definition.args],
                cwd=definition.cwd,
                env=self._worker_env(payload, definition),
                stdin_path=payload_path,
                out_path=rec.out_path,
                err_path=rec.err_path,
            )
        except OSError as exc:
            if is_transient(exc):
                await self._spawn_later(run, exc)
                return
            run.spawn_failed(exc)
            return
        self.metrics.spawned += 1
        self._spawn_backoff.succeeded()
        run.adopt(child.pid, child)
        run.start_deadlines()

    async def _spawn_later(self, run: AttemptRun, exc: OSError) -> None:
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
        run.exited = True
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
        await self.store.unclaim(self.config.server_id, run.job_id, run.rec.attempt)

    def _payload(self, job: Job, rec: AttemptRecord, definition: JobDefinition) -> dict[str, Any]:
        """PAY-2 and PAY-3: everything a worker needs, the secrets only here (ENV-3)."""
        return build_payload(
            job.id,
            job.name,
            job.data,
            rec.socket_path,
            heartbeat_timeout_ms=definition.heartbeat_timeout_ms,
            reconnect_window_ms=self.config.reconnect_window_ms,
            extensions=Extensions(
                token=rec.token,
                spool_path=rec.spool_path,
                attempt=rec.attempt,
                max_attempts=rec.max_attempts,
                max_line_bytes=self.config.max_line_bytes,
            ),
            checkpoint=job.checkpoint,  # CKPT-2
        )

    def _worker_env(self, payload: Mapping[str, Any], definition: JobDefinition) -> dict[str, str]:
        env = worker_environment(self.config, definition.env)  # ENV-3
        env.update(payload_environment(payload))  # ENV-1
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
        for rec in await self.store.running_attempts(self.config.server_id):
            definition = self.jobs.get(rec.name) or JobDefinition(name=rec.name, command="?")
            run = AttemptRun(self, definition, rec, adopted=True)
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
                    await self.store.unclaim(self.config.server_id, rec.job_id, rec.attempt)
                    continue
            elif is_same_process(rec.pid, rec.pid_start):
                log.info("job %s: re-adopted worker pid %d", rec.job_id, rec.pid)
                run.watch()
                run.start_deadlines()
                continue
            await run.gone()


def _payload_path(rec: AttemptRecord) -> str:
    return rec.out_path[: -len(".out")] + ".payload"


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)

"""The records the server hands to embedding code: jobs, log entries, events.

All are frozen dataclasses; times are epoch milliseconds (wall clock, for
display only: deadlines use the monotonic clock, HB-3).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Literal

JobStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
STATUSES: tuple[JobStatus, ...] = ("pending", "running", "completed", "failed", "cancelled")


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclasses.dataclass(frozen=True)
class Job:
    """One job as stored: its input, state, latest progress and outcome."""

    id: str
    name: str
    data: Any
    status: JobStatus
    attempt: int
    max_attempts: int
    priority: int
    run_at: int
    progress_percent: float | None
    progress_message: str | None
    progress_data: Any
    result: Any
    error: str | None
    stack: str | None
    pid: int | None
    created_at: int
    started_at: int | None
    finished_at: int | None
    checkpoint: Any = None

    @classmethod
    def pending(
        cls,
        job_id: str,
        name: str,
        data: Any,
        *,
        max_attempts: int,
        priority: int,
        run_at: int,
        created_at: int,
    ) -> Job:
        """A job just enqueued: nothing has run, nothing is known yet."""
        return cls(
            job_id,
            name,
            data,
            "pending",
            0,
            max_attempts,
            priority,
            run_at,
            *(None,) * 7,  # progress, result, error, stack, pid
            created_at,
            None,
            None,
        )

    def to_json(self) -> dict[str, Any]:
        """The job as a JSON object with camelCase keys (as on the wire)."""
        return {
            "id": self.id,
            "name": self.name,
            "data": self.data,
            "status": self.status,
            "attempt": self.attempt,
            "maxAttempts": self.max_attempts,
            "priority": self.priority,
            "runAt": self.run_at,
            "progress": {
                "percent": self.progress_percent,
                "message": self.progress_message,
                "data": self.progress_data,
            },
            "result": self.result,
            "checkpoint": self.checkpoint,
            "error": self.error,
            "stack": self.stack,
            "pid": self.pid,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }


@dataclasses.dataclass(frozen=True)
class AttemptSummary:
    """One attempt of a job as the dashboard shows it: who ran it, how it ended.

    ``features`` is what the worker's hello negotiated (NEG-2): an empty list
    for a v1 worker (no hello), None while nothing is known (the worker has
    not connected, or another server runs it). ``wire`` is the bounded wire
    log (``extjob.server.wire``), stored when the worker has exited.
    """

    job_id: str
    attempt: int
    server_id: str
    pid: int | None
    started_at: int
    ended_at: int | None  # the outcome was recorded
    outcome: str | None  # completed, failed or cancelled; None while running
    error: str | None
    exited_at: int | None
    exit_status: int | None  # as subprocess reports it (negative: a signal); None: unknown
    features: list[str] | None
    wire: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "attempt": self.attempt,
            "serverId": self.server_id,
            "pid": self.pid,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "outcome": self.outcome,
            "error": self.error,
            "exitedAt": self.exited_at,
            "exitStatus": self.exit_status,
            "features": self.features,
        }


LogSource = Literal["worker", "stdout", "stderr", "server"]


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One line of a job's log; ``index`` is 1-based per job and never changes."""

    job_id: str
    index: int
    timestamp: int
    level: str
    message: str
    data: Any
    source: LogSource

    def to_json(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "index": self.index,
            "timestamp": self.timestamp,
            "level": self.level,
            "message": self.message,
            "data": self.data,
            "source": self.source,
        }


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of SPEC section 5.4; ``id`` grows monotonically per server process.

    ``origin`` is None for this server's own events, else the id of the server
    of the cluster that emitted it (read from the shared event log)."""

    id: int
    name: str
    job_id: str
    data: dict[str, Any]
    time: float
    origin: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "jobId": self.job_id,
            "data": self.data,
            "time": self.time,
        }


@dataclasses.dataclass
class Metrics:
    """Counters since this server process started (for the Prometheus endpoint)."""

    messages_received: int = 0
    invalid_lines: int = 0
    stale_count: int = 0
    killed_count: int = 0
    reconnects: int = 0
    spawned: int = 0
    lost: int = 0
    claims: int = 0
    takeovers: int = 0
    fenced: int = 0

"""What the server stores, and the one interface every store implements.

Every method is a coroutine and one transaction; none blocks the event loop.
``write`` is a group commit: everything the server learned in one turn of
the loop (log lines, progress, outcomes, PIDs) in one transaction, each
write applied only while its attempt is still current (fencing): a write of
an attempt that was declared lost, retried or finished elsewhere changes
nothing and is reported as refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..models import AttemptSummary, Job, LogEntry, LogSource


@dataclasses.dataclass(frozen=True)
class AttemptRecord:
    """What a restarted server needs to find a running attempt again."""

    job_id: str
    name: str
    attempt: int
    pid: int
    pid_start: int  # /proc/<pid>/stat field 22, to tell a reused PID apart
    token: str
    socket_path: str
    spool_path: str
    out_path: str
    err_path: str
    out_offset: int = 0
    err_offset: int = 0
    last_seq: int = 0
    log_count: int = 0
    spawned_at: float = 0.0  # the monotonic clock (system-wide, so it survives a restart)
    cancel_requested: bool = False
    max_attempts: int = 1
    terminal: Mapping[str, Any] | None = None  # the terminal message recorded, if any


@dataclasses.dataclass
class NewLog:
    timestamp: int
    level: str
    message: str
    data: Any
    source: LogSource


@dataclasses.dataclass
class Batch:
    """Everything one read of a connection (or of an output file) changes."""

    logs: list[NewLog] = dataclasses.field(default_factory=list)
    progress: tuple[float, str | None, Any] | None = None
    checkpoint: tuple[Any] | None = None  # a 1-tuple so that a null checkpoint is storable
    last_seq: int | None = None
    out_offset: int | None = None
    err_offset: int | None = None
    terminal: Mapping[str, Any] | None = None

    def __bool__(self) -> bool:
        return bool(
            self.logs
            or self.progress
            or self.checkpoint
            or self.last_seq is not None
            or self.out_offset is not None
            or self.err_offset is not None
            or self.terminal
        )

    def absorb(self, later: Batch) -> None:
        """Add a later batch of the same attempt (its log lines follow ours)."""
        self.logs += later.logs
        progress = self.progress
        for name in ("progress", "checkpoint", "last_seq", "out_offset", "err_offset", "terminal"):
            value = getattr(later, name)
            if value is not None:
                setattr(self, name, value)
        if later.progress is not None and later.progress[1] is None and progress is not None:
            # MSG-4: a progress without a message leaves the earlier one standing
            self.progress = (later.progress[0], progress[1], later.progress[2])


# The writes of a group commit; ``attempt`` is the attempt they belong to.


@dataclasses.dataclass
class Record:
    """Log lines from ``first_index`` on, and the other changes of a batch."""

    job_id: str
    attempt: int
    first_index: int
    batch: Batch


@dataclasses.dataclass(frozen=True)
class SetPid:
    job_id: str
    attempt: int
    pid: int
    pid_start: int


@dataclasses.dataclass(frozen=True)
class Finish:
    """The attempt's outcome: the job becomes ``status``, or pending again at ``retry_at``."""

    job_id: str
    attempt: int
    status: str
    now: int
    result: Any = None
    error: str | None = None
    stack: str | None = None
    retry_at: int | None = None


@dataclasses.dataclass(frozen=True)
class EndAttempt:
    """The attempt's worker has exited: how, what it negotiated, its wire log (the dashboard's)."""

    job_id: str
    attempt: int
    exited_at: int
    exit_status: int | None
    features: Sequence[str] | None
    wire: Mapping[str, Any]


Write = Record | SetPid | Finish | EndAttempt


@dataclasses.dataclass(frozen=True)
class Lost:
    """A running attempt of a server whose lease expired, declared lost (CKPT-4)."""

    job_id: str
    name: str
    attempt: int
    owner: str
    retry_at: int | None  # None: no attempts left, the job failed


@dataclasses.dataclass(frozen=True)
class Lease:
    server_id: str
    started_at: int
    renewed_at: int
    expires_at: int


@dataclasses.dataclass(frozen=True)
class StoredEvent:
    """An event of the cluster's shared log (PostgreSQL): ``number`` is gapless, in commit order."""

    number: int
    origin: str
    name: str
    job_id: str
    data: dict[str, Any]


# Aliases, because the classes below define a method named ``list``.
Jobs = list[Job]
LogEntries = list[LogEntry]
AttemptRecords = list[AttemptRecord]
AttemptSummaries = list[AttemptSummary]
FeaturesByJob = dict[str, list[str] | None]  # job id -> NEG-2 features
Applied = list[bool]
Leases = list[Lease]
LostAttempts = list[Lost]
StoredEvents = list[StoredEvent]

# Makes the attempt record of a claimed job (token, paths), inside the claim's transaction.
Prepare = Callable[[Job], AttemptRecord]
# When a lost attempt of a job is retried (epoch ms), or None when it is not.
RetryAt = Callable[[str, int, int], int | None]  # name, attempt, max_attempts
# A notification from another server: (channel, payload).
OnNotice = Callable[[str, str], None]

WAKE = "extjob_wake"  # a job may be claimable: enqueued, retried, a slot freed
CANCEL = "extjob_cancel"  # payload: the job id whose cancel was requested
EVENTS = "extjob_events"  # new rows in the shared event log


class Store(Protocol):
    """The persistence interface of the server."""

    shared: bool  # several hosts can share it (leases, notifications, the event log)

    async def create(self, job: Job) -> None: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def list(
        self, status: str | None, name: str | None, limit: int, before: str | None = None
    ) -> Jobs: ...
    async def counts(self, name: str | None = None) -> dict[str, int]: ...
    async def running_by_owner(self) -> dict[str, int]: ...
    async def logs(self, job_id: str, after: int, limit: int) -> LogEntries: ...
    async def last_logs(self, job_id: str, limit: int) -> LogEntries: ...
    async def attempts(self, job_id: str, after: int, limit: int) -> AttemptSummaries: ...
    async def current_features(self, job_ids: Sequence[str]) -> FeaturesByJob: ...
    async def claim(
        self, owner: str, now: int, limits: Mapping[str, int], prepare: Prepare
    ) -> tuple[Job, AttemptRecord] | None: ...
    async def next_run_at(self, names: Sequence[str]) -> int | None: ...
    async def write(self, owner: str, writes: Sequence[Write]) -> Applied: ...
    async def unclaim(self, owner: str, job_id: str, attempt: int) -> None: ...
    async def cancel_pending(self, job_id: str, now: int) -> bool: ...
    async def request_cancel(self, job_id: str) -> str | None: ...
    async def running_attempts(self, owner: str) -> AttemptRecords: ...
    async def renew(self, server_id: str, lease_ms: int) -> Lease: ...
    async def leases(self) -> Leases: ...
    async def reap(self, server_id: str, retry_at: RetryAt) -> LostAttempts: ...
    async def leave(self, server_id: str) -> None: ...
    async def close(self) -> None: ...


class SharedStore(Store, Protocol):
    """A store several hosts share: notifications and a numbered event log besides."""

    cluster_id: str  # random per database: event ids of another cluster are never taken

    async def watch(self, on_notice: OnNotice) -> None: ...
    async def publish(self, origin: str, events: Sequence[tuple[str, str, str]]) -> int: ...
    async def events_after(self, number: int, limit: int) -> StoredEvents: ...
    async def last_event(self) -> int: ...
    async def prune_events(self, keep: int) -> None: ...

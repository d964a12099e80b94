"""Durable state behind a small interface, with SQLite (WAL) as the default.

The server talks to its store only through ``Store``; a PostgreSQL store for
several servers sharing one queue implements the same methods. Every method
is one transaction. ``record`` takes a whole batch of messages (one read from
a connection) so that ingest costs one commit per batch, not per message
(REPLAY-2), and heartbeats never reach the store at all (HB-4).

Durability: SQLite in WAL mode with ``synchronous=NORMAL`` survives a crash
of the server process (the case this server is built for); it may lose the
last commits on power loss. Set ``synchronous=FULL`` via ``SQLiteStore(...,
synchronous="FULL")`` when that matters more than ingest speed.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .models import STATUSES, AttemptSummary, Job, LogEntry, LogSource
from .private import prepare_database


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


# Aliases, because the classes below define a method named ``list``.
Jobs = list[Job]
LogEntries = list[LogEntry]
AttemptRecords = list[AttemptRecord]
AttemptSummaries = list[AttemptSummary]
FeaturesByJob = dict[str, list[str] | None]  # job id -> NEG-2 features

# Makes the attempt record of a claimed job (token, paths), inside the claim's transaction.
Prepare = Callable[[Job], AttemptRecord]


class Store(Protocol):
    """The persistence interface of the server."""

    def create(self, job: Job) -> None: ...
    def get(self, job_id: str) -> Job | None: ...
    def list(
        self, status: str | None, name: str | None, limit: int, before: str | None = None
    ) -> Jobs: ...
    def counts(self, name: str | None = None) -> dict[str, int]: ...
    def logs(self, job_id: str, after: int, limit: int) -> LogEntries: ...
    def last_logs(self, job_id: str, limit: int) -> LogEntries: ...
    def attempts(self, job_id: str, after: int, limit: int) -> AttemptSummaries: ...
    def current_features(self, job_ids: Sequence[str]) -> FeaturesByJob: ...
    def end_attempt(
        self,
        job_id: str,
        attempt: int,
        exited_at: int,
        exit_status: int | None,
        features: Sequence[str] | None,
        wire: Mapping[str, Any],
    ) -> None: ...
    def claim(
        self, owner: str, now: int, limits: Mapping[str, int], prepare: Prepare
    ) -> tuple[Job, AttemptRecord] | None: ...
    def next_run_at(self, names: Sequence[str]) -> int | None: ...
    def record_pid(self, job_id: str, pid: int, pid_start: int) -> None: ...
    def unclaim(self, job_id: str) -> None: ...
    def record(self, items: Sequence[tuple[str, int, Batch]]) -> None: ...
    def finish(
        self,
        job_id: str,
        status: str,
        now: int,
        *,
        result: Any = None,
        error: str | None = None,
        stack: str | None = None,
        retry_at: int | None = None,
    ) -> None: ...
    def cancel_pending(self, job_id: str, now: int) -> bool: ...
    def request_cancel(self, job_id: str) -> None: ...
    def running_attempts(self, owner: str) -> AttemptRecords: ...
    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL,
    progress_percent REAL,
    progress_message TEXT,
    progress_data TEXT,
    result TEXT,
    error TEXT,
    stack TEXT,
    checkpoint TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    -- the current attempt, while running
    owner TEXT,
    pid INTEGER,
    pid_start INTEGER,
    token TEXT,
    socket_path TEXT,
    spool_path TEXT,
    out_path TEXT,
    err_path TEXT,
    out_offset INTEGER NOT NULL DEFAULT 0,
    err_offset INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    log_count INTEGER NOT NULL DEFAULT 0,
    spawned_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    terminal TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, priority DESC, run_at, seq);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, status);
-- the dashboard's pages: newest first, by state or by name
CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_name_seq ON jobs (name, status, seq);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    source TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
-- One row per attempt, for the dashboard; written at claim, at the outcome
-- and at the exit, never per message.
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    server_id TEXT NOT NULL,
    pid INTEGER,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    outcome TEXT,
    error TEXT,
    exited_at INTEGER,
    exit_status INTEGER,
    features TEXT,
    wire TEXT,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
"""

_JOB_COLUMNS = (
    "id, name, data, status, attempt, max_attempts, priority, run_at, progress_percent, "
    "progress_message, progress_data, result, error, stack, pid, created_at, started_at, "
    "finished_at, checkpoint"
)
_SUMMARY_COLUMNS = (
    "job_id, attempt, server_id, pid, started_at, ended_at, outcome, error, exited_at, "
    "exit_status, features"
)
_ATTEMPT_COLUMNS = (
    "id, name, attempt, pid, pid_start, token, socket_path, spool_path, out_path, err_path, "
    "out_offset, err_offset, last_seq, log_count, spawned_at, cancel_requested, max_attempts, "
    "terminal"
)


# The attempt a job is on now (parameters: the job id, twice).
_CURRENT_ATTEMPT = "job_id = ? AND attempt = (SELECT attempt FROM jobs WHERE id = ?)"


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _job(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        name=row[1],
        data=_load(row[2]),
        status=row[3],
        attempt=row[4],
        max_attempts=row[5],
        priority=row[6],
        run_at=row[7],
        progress_percent=row[8],
        progress_message=row[9],
        progress_data=_load(row[10]),
        result=_load(row[11]),
        error=row[12],
        stack=row[13],
        pid=row[14],
        created_at=row[15],
        started_at=row[16],
        finished_at=row[17],
        checkpoint=_load(row[18]),
    )


class SQLiteStore:
    """The default store: one SQLite file in WAL mode, safe to share between processes."""

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        # isolation_level=None: we issue BEGIN ourselves, so a claim can take
        # the write lock up front (BEGIN IMMEDIATE) and be atomic across processes.
        prepare_database(path)  # 0600, and so are the -wal and -shm SQLite makes beside it
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(f"PRAGMA synchronous = {synchronous}")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _tx(self, immediate: bool = False) -> _Transaction:
        return _Transaction(self._db, immediate)

    def create(self, job: Job) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO jobs (id, name, data, status, attempt, max_attempts, priority, "
                "run_at, created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
                (
                    job.id,
                    job.name,
                    _dump(job.data),
                    job.max_attempts,
                    job.priority,
                    job.run_at,
                    job.created_at,
                ),
            )

    def get(self, job_id: str) -> Job | None:
        row = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return None if row is None else _job(row)

    def list(
        self, status: str | None, name: str | None, limit: int, before: str | None = None
    ) -> Jobs:
        """Newest first; ``before``: only jobs enqueued before that job (keyset paging)."""
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if name is not None:
            where.append("name = ?")
            args.append(name)
        if before is not None:
            where.append("seq < coalesce((SELECT seq FROM jobs WHERE id = ?), 0)")
            args.append(before)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_job(r) for r in rows]

    def counts(self, name: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        if name is None:
            rows = self._db.execute("SELECT status, count(*) FROM jobs GROUP BY status")
        else:
            rows = self._db.execute(
                "SELECT status, count(*) FROM jobs WHERE name = ? GROUP BY status", (name,)
            )
        for status, n in rows:
            counts[status] = n
        return counts

    def logs(self, job_id: str, after: int, limit: int) -> LogEntries:
        rows = self._db.execute(
            "SELECT idx, timestamp, level, message, data, source FROM logs "
            "WHERE job_id = ? AND idx > ? ORDER BY idx LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
        return [LogEntry(job_id, r[0], r[1], r[2], r[3], _load(r[4]), r[5]) for r in rows]

    def last_logs(self, job_id: str, limit: int) -> LogEntries:
        """The newest ``limit`` entries, oldest first (a log's tail)."""
        rows = self._db.execute(
            "SELECT idx, timestamp, level, message, data, source FROM logs "
            "WHERE job_id = ? ORDER BY idx DESC LIMIT ?",
            (job_id, limit),
        ).fetchall()
        return [LogEntry(job_id, r[0], r[1], r[2], r[3], _load(r[4]), r[5]) for r in rows[::-1]]

    def claim(
        self, owner: str, now: int, limits: Mapping[str, int], prepare: Prepare
    ) -> tuple[Job, AttemptRecord] | None:
        """Take the next due job whose name is in ``limits`` and under its limit (0: none).

        BEGIN IMMEDIATE holds SQLite's write lock from the first read, so two
        servers on one file can never claim the same job. The attempt's token
        and paths are stored in the same transaction, so that a restarted
        server knows them whenever the job is running (its worker may have
        been spawned just before a crash).
        """
        names = list(limits)
        if not names:
            return None
        marks = ",".join("?" * len(names))
        with self._tx(immediate=True):
            running = dict(
                self._db.execute(
                    "SELECT name, count(*) FROM jobs "
                    f"WHERE status = 'running' AND name IN ({marks}) "
                    "GROUP BY name",
                    names,
                ).fetchall()
            )
            allowed = [n for n in names if not limits[n] or running.get(n, 0) < limits[n]]
            if not allowed:
                return None
            marks = ",".join("?" * len(allowed))
            row = self._db.execute(
                "SELECT id FROM jobs "
                f"WHERE status = 'pending' AND run_at <= ? AND name IN ({marks}) "
                "ORDER BY priority DESC, run_at, seq LIMIT 1",
                (now, *allowed),
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE jobs SET status = 'running', owner = ?, attempt = attempt + 1, "
                "started_at = coalesce(started_at, ?), out_offset = 0, err_offset = 0, "
                "last_seq = 0, cancel_requested = 0, terminal = NULL WHERE id = ?",
                (owner, now, row[0]),
            )
            job = self.get(row[0])
            assert job is not None
            rec = prepare(job)
            self._db.execute(
                "UPDATE jobs SET pid = 0, pid_start = 0, token = ?, socket_path = ?, "
                "spool_path = ?, out_path = ?, err_path = ?, spawned_at = ? WHERE id = ?",
                (
                    rec.token,
                    rec.socket_path,
                    rec.spool_path,
                    rec.out_path,
                    rec.err_path,
                    rec.spawned_at,
                    rec.job_id,
                ),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, attempt, server_id, started_at) "
                "VALUES (?, ?, ?, ?)",
                (job.id, job.attempt, owner, now),
            )
            return job, rec

    def next_run_at(self, names: Sequence[str]) -> int | None:
        if not names:
            return None
        marks = ",".join("?" * len(names))
        row = self._db.execute(
            f"SELECT min(run_at) FROM jobs WHERE status = 'pending' AND name IN ({marks})", names
        ).fetchone()
        return row[0]

    def record_pid(self, job_id: str, pid: int, pid_start: int) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE jobs SET pid = ?, pid_start = ? WHERE id = ?", (pid, pid_start, job_id)
            )
            self._db.execute(
                f"UPDATE attempts SET pid = ? WHERE {_CURRENT_ATTEMPT}", (pid, job_id, job_id)
            )

    def unclaim(self, job_id: str) -> None:
        """Undo a claim whose worker never got its payload: pending again, attempt not counted."""
        with self._tx():
            self._db.execute(
                f"DELETE FROM attempts WHERE {_CURRENT_ATTEMPT} AND EXISTS (SELECT 1 FROM jobs "
                "WHERE id = attempts.job_id AND status = 'running' AND pid = 0)",
                (job_id, job_id),
            )
            self._db.execute(
                "UPDATE jobs SET status = 'pending', attempt = attempt - 1, owner = NULL, "
                "token = NULL WHERE id = ? AND status = 'running' AND pid = 0",
                (job_id,),
            )

    def record(self, items: Sequence[tuple[str, int, Batch]]) -> None:
        """Apply batches atomically, each as (job id, index of its first log entry, batch)."""
        with self._tx():
            for job_id, first_index, batch in items:
                self._apply(job_id, first_index, batch)

    def _apply(self, job_id: str, first_index: int, batch: Batch) -> None:
        sets: list[str] = []
        args: list[Any] = []
        if batch.logs:
            sets.append("log_count = ?")
            args.append(first_index + len(batch.logs) - 1)
        if batch.progress is not None:
            # MSG-4: a progress without message leaves the previous one standing
            sets.append(
                "progress_percent = ?, progress_message = coalesce(?, progress_message), "
                "progress_data = ?"
            )
            percent, message, data = batch.progress
            args += [percent, message, None if data is None else _dump(data)]
        if batch.checkpoint is not None:
            sets.append("checkpoint = ?")
            args.append(_dump(batch.checkpoint[0]))
        for column in ("last_seq", "out_offset", "err_offset"):
            value = getattr(batch, column)
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        if batch.terminal is not None:
            sets.append("terminal = ?")
            args.append(_dump(batch.terminal))
        if batch.logs:
            self._db.executemany(
                "INSERT INTO logs (job_id, idx, timestamp, level, message, data, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job_id,
                        first_index + i,
                        e.timestamp,
                        e.level,
                        e.message,
                        None if e.data is None else _dump(e.data),
                        e.source,
                    )
                    for i, e in enumerate(batch.logs)
                ],
            )
        if sets:
            self._db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id = ?", (*args, job_id))

    def finish(
        self,
        job_id: str,
        status: str,
        now: int,
        *,
        result: Any = None,
        error: str | None = None,
        stack: str | None = None,
        retry_at: int | None = None,
    ) -> None:
        """End the running attempt: the job becomes ``status``, or pending again at ``retry_at``."""
        with self._tx():
            self._db.execute(
                "UPDATE attempts SET ended_at = ?, outcome = ?, error = ? "
                f"WHERE {_CURRENT_ATTEMPT}",
                (now, status, error, job_id, job_id),
            )
            if retry_at is not None:
                self._db.execute(
                    "UPDATE jobs SET status = 'pending', run_at = ?, error = ?, stack = ?, "
                    "owner = NULL, "
                    "token = NULL WHERE id = ?",
                    (retry_at, error, stack, job_id),
                )
            else:
                self._db.execute(
                    "UPDATE jobs SET status = ?, result = ?, error = ?, stack = ?, "
                    "finished_at = ?, "
                    "owner = NULL, token = NULL WHERE id = ?",
                    (status, _dump(result), error, stack, now, job_id),
                )

    def end_attempt(
        self,
        job_id: str,
        attempt: int,
        exited_at: int,
        exit_status: int | None,
        features: Sequence[str] | None,
        wire: Mapping[str, Any],
    ) -> None:
        """The worker of ``attempt`` has exited: how, what it negotiated, its wire log."""
        with self._tx():
            self._db.execute(
                "UPDATE attempts SET exited_at = ?, exit_status = ?, "
                "features = coalesce(?, features), wire = ? WHERE job_id = ? AND attempt = ?",
                (
                    exited_at,
                    exit_status,
                    None if features is None else _dump(list(features)),
                    _dump(wire),
                    job_id,
                    attempt,
                ),
            )

    def attempts(self, job_id: str, after: int, limit: int) -> AttemptSummaries:
        """Attempts numbered after ``after``, oldest first."""
        rows = self._db.execute(
            f"SELECT {_SUMMARY_COLUMNS}, wire FROM attempts WHERE job_id = ? AND attempt > ? "
            "ORDER BY attempt LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
        return [
            AttemptSummary(
                job_id=r[0],
                attempt=r[1],
                server_id=r[2],
                pid=r[3],
                started_at=r[4],
                ended_at=r[5],
                outcome=r[6],
                error=r[7],
                exited_at=r[8],
                exit_status=r[9],
                features=_load(r[10]),
                wire=_load(r[11]),
            )
            for r in rows
        ]

    def current_features(self, job_ids: Sequence[str]) -> FeaturesByJob:
        """What the latest attempt of each job negotiated, where it is stored."""
        if not job_ids:
            return {}
        marks = ",".join("?" * len(job_ids))
        rows = self._db.execute(
            "SELECT a.job_id, a.features FROM attempts a JOIN jobs j "
            f"ON j.id = a.job_id AND j.attempt = a.attempt WHERE a.job_id IN ({marks})",
            list(job_ids),
        )
        return {job_id: _load(features) for job_id, features in rows}

    def cancel_pending(self, job_id: str, now: int) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? "
                "WHERE id = ? AND status = 'pending'",
                (now, job_id),
            )
            return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> None:
        with self._tx():
            self._db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))

    def running_attempts(self, owner: str) -> AttemptRecords:
        rows = self._db.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM jobs WHERE owner = ? AND status = 'running'", (owner,)
        ).fetchall()
        return [
            AttemptRecord(
                job_id=r[0],
                name=r[1],
                attempt=r[2],
                pid=r[3] or 0,
                pid_start=r[4] or 0,
                token=r[5] or "",
                socket_path=r[6] or "",
                spool_path=r[7] or "",
                out_path=r[8] or "",
                err_path=r[9] or "",
                out_offset=r[10],
                err_offset=r[11],
                last_seq=r[12],
                log_count=r[13],
                spawned_at=r[14] or 0.0,
                cancel_requested=bool(r[15]),
                max_attempts=r[16],
                terminal=_load(r[17]),
            )
            for r in rows
        ]


class _Transaction:
    def __init__(self, db: sqlite3.Connection, immediate: bool) -> None:
        self._db = db
        self._begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    def __enter__(self) -> _Transaction:
        self._db.execute(self._begin)
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")

"""The default store: one SQLite file in WAL mode, its calls on a thread of their own.

SQLite's calls block (a write lock held by another process can hold one up
for the whole ``busy_timeout``), so every call runs on one dedicated thread
and the event loop only awaits it. One thread, one connection: calls run in
the order they were made, as on the loop before.

Durability: WAL with ``synchronous=NORMAL`` survives a crash of the server
process (the case this server is built for); it may lose the last commits on
power loss. ``SQLiteStore(path, synchronous="FULL")`` when that matters more
than ingest speed. Several servers of one host may share a file: the claim
holds the write lock from its first read (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ..models import STATUSES, Job, now_ms
from ..private import prepare_database
from . import _rows
from ._contract import (
    Applied,
    AttemptRecord,
    AttemptRecords,
    AttemptSummaries,
    EndAttempt,
    FeaturesByJob,
    Finish,
    Jobs,
    Lease,
    Leases,
    LogEntries,
    Lost,
    LostAttempts,
    Prepare,
    Record,
    RetryAt,
    SetPid,
    Write,
)
from ._schema import SQLITE

T = TypeVar("T")
_END_OUTCOME = (
    "UPDATE attempts SET ended_at = ?, outcome = ?, error = ? WHERE job_id = ? AND attempt = ?"
)
_END_ATTEMPT = (
    "UPDATE attempts SET exited_at = ?, exit_status = ?, features = coalesce(?, features), "
    "wire = ? WHERE job_id = ? AND attempt = ?"
)
# A write of an attempt applies while it is the job's latest attempt and the
# job is still its server's: log lines (output, notes) also after its outcome,
# nothing once the job was claimed again or declared lost.
_OURS = "id = ? AND attempt = ? AND owner = ?"
_CURRENT = _OURS + " AND status = 'running'"


class SQLiteStore:
    shared = False

    def __init__(self, path: str, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="extjob-sqlite")
        self._db: _Database | None = None

    async def open(self) -> SQLiteStore:
        """Open the file and apply the missing migrations (off the loop too)."""
        self._db = await self._run(_Database, self.path, self._synchronous)
        return self

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    @property
    def db(self) -> _Database:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=False)

    async def create(self, job: Job) -> None:
        await self._run(self.db.create, job)

    async def get(self, job_id: str) -> Job | None:
        return await self._run(self.db.get, job_id)

    async def list(
        self, status: str | None, name: str | None, limit: int, before: str | None = None
    ) -> Jobs:
        return await self._run(self.db.list, status, name, limit, before)

    async def counts(self, name: str | None = None) -> dict[str, int]:
        return await self._run(self.db.counts, name)

    async def running_by_owner(self) -> dict[str, int]:
        return await self._run(self.db.running_by_owner)

    async def logs(self, job_id: str, after: int, limit: int) -> LogEntries:
        return await self._run(self.db.logs, job_id, after, limit)

    async def last_logs(self, job_id: str, limit: int) -> LogEntries:
        return await self._run(self.db.last_logs, job_id, limit)

    async def attempts(self, job_id: str, after: int, limit: int) -> AttemptSummaries:
        return await self._run(self.db.attempts, job_id, after, limit)

    async def current_features(self, job_ids: Sequence[str]) -> FeaturesByJob:
        return await self._run(self.db.current_features, job_ids)

    async def claim(
        self, owner: str, now: int, limits: Mapping[str, int], prepare: Prepare
    ) -> tuple[Job, AttemptRecord] | None:
        return await self._run(self.db.claim, owner, now, limits, prepare)

    async def next_run_at(self, names: Sequence[str]) -> int | None:
        return await self._run(self.db.next_run_at, names)

    async def write(self, owner: str, writes: Sequence[Write]) -> Applied:
        return await self._run(self.db.write, owner, writes)

    async def unclaim(self, owner: str, job_id: str, attempt: int) -> None:
        await self._run(self.db.unclaim, owner, job_id, attempt)

    async def cancel_pending(self, job_id: str, now: int) -> bool:
        return await self._run(self.db.cancel_pending, job_id, now)

    async def request_cancel(self, job_id: str) -> str | None:
        return await self._run(self.db.request_cancel, job_id)

    async def running_attempts(self, owner: str) -> AttemptRecords:
        return await self._run(self.db.running_attempts, owner)

    async def renew(self, server_id: str, lease_ms: int) -> Lease:
        return await self._run(self.db.renew, server_id, lease_ms)

    async def leases(self) -> Leases:
        return await self._run(self.db.leases)

    async def reap(self, server_id: str, retry_at: RetryAt) -> LostAttempts:
        return await self._run(self.db.reap, server_id, retry_at)

    async def leave(self, server_id: str) -> None:
        await self._run(self.db.leave, server_id)


class _Database:
    """The blocking half: runs on the store's thread only."""

    def __init__(self, path: str, synchronous: str) -> None:
        prepare_database(path)  # 0600, and so are the -wal and -shm SQLite makes beside it
        # isolation_level=None: we issue BEGIN ourselves, so a claim can take
        # the write lock up front (BEGIN IMMEDIATE) and be atomic across processes.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(f"PRAGMA synchronous = {synchronous}")
        self._migrate()

    def _migrate(self) -> None:
        with self._tx(immediate=True):
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(SQLITE[version:], start=version + 1):
                # executescript would commit first, giving up the lock: one
                # statement at a time (comments out first, they may hold a ";").
                lines = (ln for ln in script.splitlines() if not ln.lstrip().startswith("--"))
                for statement in "\n".join(lines).split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self, immediate: bool = False) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def create(self, job: Job) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO jobs (id, name, data, status, attempt, max_attempts, priority, "
                "run_at, created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?)",
                (
                    job.id,
                    job.name,
                    _rows.dump(job.data),
                    job.max_attempts,
                    job.priority,
                    job.run_at,
                    job.created_at,
                ),
            )

    def get(self, job_id: str) -> Job | None:
        row = self._db.execute(
            f"SELECT {_rows.JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return None if row is None else _rows.job(row)

    def list(
        self, status: str | None, name: str | None, limit: int, before: str | None = None
    ) -> Jobs:
        """Newest first; ``before``: only jobs enqueued before that job (keyset paging)."""
        rows = self._db.execute(*_rows.list_query(status, name, limit, before, "?")).fetchall()
        return [_rows.job(r) for r in rows]

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

    def running_by_owner(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT owner, count(*) FROM jobs WHERE status = 'running' GROUP BY owner"
        )
        return dict(rows.fetchall())

    def logs(self, job_id: str, after: int, limit: int) -> LogEntries:
        rows = self._db.execute(
            f"SELECT {_rows.LOG_COLUMNS} FROM logs WHERE job_id = ? AND idx > ? "
            "ORDER BY idx LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
        return [_rows.log_entry(job_id, r) for r in rows]

    def last_logs(self, job_id: str, limit: int) -> LogEntries:
        """The newest ``limit`` entries, oldest first (a log's tail)."""
        rows = self._db.execute(
            f"SELECT {_rows.LOG_COLUMNS} FROM logs WHERE job_id = ? ORDER BY idx DESC LIMIT ?",
            (job_id, limit),
        ).fetchall()
        return [_rows.log_entry(job_id, r) for r in rows[::-1]]

    def attempts(self, job_id: str, after: int, limit: int) -> AttemptSummaries:
        """Attempts numbered after ``after``, oldest first."""
        rows = self._db.execute(
            f"SELECT {_rows.SUMMARY_COLUMNS} FROM attempts WHERE job_id = ? AND attempt > ? "
            "ORDER BY attempt LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
        return [_rows.summary(r) for r in rows]

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
        return {job_id: _rows.load(features) for job_id, features in rows}

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
                    f"WHERE status = 'running' AND name IN ({marks}) GROUP BY name",
                    names,
                ).fetchall()
            )
            allowed = [n for n in names if not limits[n] or running.get(n, 0) < limits[n]]
            if not allowed:
                return None
            marks = ",".join("?" * len(allowed))
            row = self._db.execute(
                f"SELECT {_rows.JOB_COLUMNS} FROM jobs "
                f"WHERE status = 'pending' AND run_at <= ? AND name IN ({marks}) "
                "ORDER BY priority DESC, run_at, seq LIMIT 1",
                (now, *allowed),
            ).fetchone()
            if row is None:
                return None
            job = _rows.claimed(_rows.job(row), now)
            rec = prepare(job)
            self._db.execute(
                "UPDATE jobs SET status = 'running', owner = ?, attempt = ?, started_at = ?, "
                "out_offset = 0, err_offset = 0, last_seq = 0, cancel_requested = 0, "
                "terminal = NULL, pid = 0, pid_start = 0, token = ?, socket_path = ?, "
                "spool_path = ?, out_path = ?, err_path = ?, spawned_at = ? WHERE id = ?",
                (
                    owner,
                    job.attempt,
                    job.started_at,
                    rec.token,
                    rec.socket_path,
                    rec.spool_path,
                    rec.out_path,
                    rec.err_path,
                    rec.spawned_at,
                    job.id,
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
        result: int | None = row[0]
        return result

    def write(self, owner: str, writes: Sequence[Write]) -> Applied:
        with self._tx():
            return [self._apply(owner, w) for w in writes]

    def _apply(self, owner: str, w: Write) -> bool:
        current = (w.job_id, w.attempt, owner)
        if isinstance(w, Record):
            sets, args = _rows.batch_sets(w.batch, w.first_index, "?")
            cur = self._db.execute(
                f"UPDATE jobs SET {', '.join(sets) or 'owner = owner'} WHERE {_OURS}",
                (*args, *current),
            )
            if cur.rowcount and w.batch.logs:
                self._db.executemany(
                    "INSERT INTO logs (job_id, idx, timestamp, level, message, data, source) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    _rows.log_rows(w.job_id, w.first_index, w.batch.logs),
                )
        elif isinstance(w, SetPid):
            cur = self._db.execute(
                f"UPDATE jobs SET pid = ?, pid_start = ? WHERE {_CURRENT}",
                (w.pid, w.pid_start, *current),
            )
            if cur.rowcount:
                self._db.execute(
                    "UPDATE attempts SET pid = ? WHERE job_id = ? AND attempt = ?",
                    (w.pid, w.job_id, w.attempt),
                )
        elif isinstance(w, EndAttempt):
            self._db.execute(_END_ATTEMPT, _rows.end_attempt_args(w))
            return True
        elif w.retry_at is not None:
            cur = self._db.execute(
                "UPDATE jobs SET status = 'pending', run_at = ?, error = ?, stack = ?, "
                f"token = NULL WHERE {_CURRENT}",
                (w.retry_at, w.error, w.stack, *current),
            )
        else:
            cur = self._db.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, stack = ?, finished_at = ?, "
                f"token = NULL WHERE {_CURRENT}",
                (w.status, _rows.dump(w.result), w.error, w.stack, w.now, *current),
            )
        if isinstance(w, Finish) and cur.rowcount:
            self._db.execute(_END_OUTCOME, (w.now, w.status, w.error, w.job_id, w.attempt))
        return cur.rowcount == 1

    def unclaim(self, owner: str, job_id: str, attempt: int) -> None:
        """Undo a claim whose worker never got its payload: pending again, attempt not counted."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE jobs SET status = 'pending', attempt = attempt - 1, owner = NULL, "
                f"token = NULL WHERE {_CURRENT} AND pid = 0",
                (job_id, attempt, owner),
            )
            if cur.rowcount:
                self._db.execute(
                    "DELETE FROM attempts WHERE job_id = ? AND attempt = ?", (job_id, attempt)
                )

    def cancel_pending(self, job_id: str, now: int) -> bool:
        with self._tx():
            cur = self._db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? "
                "WHERE id = ? AND status = 'pending'",
                (now, job_id),
            )
            return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> str | None:
        with self._tx():
            row = self._db.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = 'running' "
                "RETURNING owner",
                (job_id,),
            ).fetchone()
            return None if row is None else str(row[0])

    def running_attempts(self, owner: str) -> AttemptRecords:
        rows = self._db.execute(
            f"SELECT {_rows.ATTEMPT_COLUMNS} FROM jobs WHERE owner = ? AND status = 'running'",
            (owner,),
        ).fetchall()
        return [_rows.attempt(r) for r in rows]

    def renew(self, server_id: str, lease_ms: int) -> Lease:
        now = now_ms()
        with self._tx():
            row = self._db.execute(
                "INSERT INTO servers (id, started_at, renewed_at, expires_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET renewed_at = excluded.renewed_at, "
                "expires_at = excluded.expires_at RETURNING started_at",
                (server_id, now, now, now + lease_ms),
            ).fetchone()
        return Lease(server_id, row[0], now, now + lease_ms)

    def leases(self) -> Leases:
        rows = self._db.execute(
            "SELECT id, started_at, renewed_at, expires_at FROM servers ORDER BY id"
        )
        return [Lease(*r) for r in rows]

    def reap(self, server_id: str, retry_at: RetryAt) -> LostAttempts:
        with self._tx(immediate=True):
            expired = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM servers WHERE expires_at < ? AND id != ?", (now_ms(), server_id)
                )
            ]
            lost = []
            for owner in expired:
                rows = self._db.execute(
                    "SELECT id, name, attempt, max_attempts FROM jobs "
                    "WHERE owner = ? AND status = 'running'",
                    (owner,),
                ).fetchall()
                for job_id, name, attempt, max_attempts in rows:
                    again = retry_at(name, attempt, max_attempts)
                    lost.append(Lost(job_id, name, attempt, owner, again))
                self._db.execute("DELETE FROM servers WHERE id = ?", (owner,))
            for item in lost:
                self._declare_lost(item)
            return lost

    def _declare_lost(self, item: Lost) -> None:
        error = _rows.lost_error(item.owner)
        self._db.execute(_END_OUTCOME, (now_ms(), "failed", error, item.job_id, item.attempt))
        if item.retry_at is not None:
            self._db.execute(
                "UPDATE jobs SET status = 'pending', run_at = ?, error = ?, owner = NULL, "
                "token = NULL WHERE id = ?",
                (item.retry_at, error, item.job_id),
            )
        else:
            self._db.execute(
                "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, result = 'null', "
                "owner = NULL, token = NULL WHERE id = ?",
                (error, now_ms(), item.job_id),
            )

    def leave(self, server_id: str) -> None:
        with self._tx():
            self._db.execute("DELETE FROM servers WHERE id = ?", (server_id,))

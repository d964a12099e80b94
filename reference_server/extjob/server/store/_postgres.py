"""The store for several servers: PostgreSQL through psycopg 3 (async, pooled).

Claims take the next due job with ``FOR UPDATE SKIP LOCKED``, so servers
never wait for each other's claims and never take one job twice; a name with
a concurrency limit is claimed under a transaction-scoped advisory lock per
name, so that the limit holds across the cluster. Every write is fenced on
(job, attempt, owner, running). Enqueues, retries, freed slots and cancel
requests are announced with NOTIFY in the transaction that makes them, so
they are seen the moment they commit. The shared event log numbers events
without gaps, in commit order (inserts are serialized by an advisory lock),
so that an event id means the same on every server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ..models import STATUSES, Job
from . import _rows
from ._contract import (
    CANCEL,
    EVENTS,
    WAKE,
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
    OnNotice,
    Prepare,
    Record,
    RetryAt,
    SetPid,
    StoredEvent,
    StoredEvents,
    Write,
)
from ._schema import POSTGRES

log = logging.getLogger(__name__)

Rows = list[Any]
_END_ATTEMPT = (
    "UPDATE attempts SET exited_at = %s, exit_status = %s, features = coalesce(%s, features), "
    "wire = %s WHERE job_id = %s AND attempt = %s"
)
NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"
# A write of an attempt applies while it is the job's latest attempt and the
# job is still its server's: log lines (output, notes) also after its outcome,
# nothing once the job was claimed again or declared lost.
_OURS = "id = %s AND attempt = %s AND owner = %s"
_CURRENT = _OURS + " AND status = 'running'"
# Advisory lock keys (first half): one namespace of this application.
_LOCK = 0x6578_746A  # "extj"
_MIGRATIONS, _EVENT_LOG, _NAME_LIMIT = 1, 2, 3
LISTEN_RETRY_SECONDS = 0.5


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


class PostgresStore:
    shared = True

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.cluster_id = ""
        self._pool = AsyncConnectionPool(
            url,
            min_size=2,
            max_size=pool_size,
            kwargs={"autocommit": True},
            open=False,
            name="extjob",
        )

    async def open(self, timeout: float = 30.0) -> PostgresStore:
        try:
            await self._pool.open(wait=True, timeout=timeout)
        except psycopg.OperationalError as exc:
            raise OSError(f"cannot connect to {redact(self.url)}: {exc}") from exc
        except Exception as exc:  # psycopg_pool.PoolTimeout
            await self._pool.close()
            raise OSError(f"cannot connect to {redact(self.url)}: {exc}") from exc
        await self._migrate()
        return self

    async def _migrate(self) -> None:
        # Not pipelined: a migration is a script of several statements.
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK, _MIGRATIONS))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now(), applied_by text NOT NULL)"
            )
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = await cur.fetchone()
            version = row[0] if row else 0
            for number, script in enumerate(POSTGRES[version:], start=version + 1):
                await conn.execute(script)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_by) VALUES (%s, %s)",
                    (number, f"{socket.gethostname()} pid {os.getpid()}"),
                )
                log.info("database: applied migration %d", number)
            cur = await conn.execute("SELECT id FROM cluster")
            row = await cur.fetchone()
            self.cluster_id = str(row[0]) if row else ""

    async def close(self) -> None:
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A transaction whose statements are pipelined (sent without waiting;
        a fetch waits), then COMMIT on its own, so that its outcome is never in
        doubt: a connection cut after a pipelined COMMIT can report a failure
        for a transaction that committed, and a worker would replay what is
        stored. Round trips: one per fetch, one for the rest, one for COMMIT."""
        async with self._pool.connection() as conn:
            try:
                async with conn.pipeline():
                    await conn.execute("BEGIN")
                    yield conn
                await conn.execute("COMMIT")
            except BaseException:
                if not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        await conn.execute("ROLLBACK")
                raise

    async def _one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchone()

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, args)
            return await cur.fetchall()

    # jobs

    async def create(self, job: Job) -> None:
        async with self._tx() as conn:
            await conn.execute(
                "INSERT INTO jobs (id, name, data, status, attempt, max_attempts, priority, "
                "run_at, created_at) VALUES (%s, %s, %s, 'pending', 0, %s, %s, %s, %s)",
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
            await conn.execute("SELECT pg_notify(%s, %s)", (WAKE, job.name))

    async def get(self, job_id: str) -> Job | None:
        row = await self._one(f"SELECT {_rows.JOB_COLUMNS} FROM jobs WHERE id = %s", (job_id,))
        return None if row is None else _rows.job(row)

    async def list(
        self, status: str | None, name: str | None, limit: int, before: str | None = None
    ) -> Jobs:
        """Newest first; ``before``: only jobs enqueued before that job (keyset paging)."""
        rows = await self._all(*_rows.list_query(status, name, limit, before, "%s"))
        return [_rows.job(r) for r in rows]

    async def counts(self, name: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
        if name is None:
            rows = await self._all("SELECT status, count(*) FROM jobs GROUP BY status")
        else:
            rows = await self._all(
                "SELECT status, count(*) FROM jobs WHERE name = %s GROUP BY status", (name,)
            )
        for status, n in rows:
            counts[status] = n
        return counts

    async def running_by_owner(self) -> dict[str, int]:
        rows = await self._all(
            "SELECT owner, count(*) FROM jobs WHERE status = 'running' GROUP BY owner"
        )
        return dict(rows)

    async def logs(self, job_id: str, after: int, limit: int) -> LogEntries:
        rows = await self._all(
            f"SELECT {_rows.LOG_COLUMNS} FROM logs WHERE job_id = %s AND idx > %s "
            "ORDER BY idx LIMIT %s",
            (job_id, after, limit),
        )
        return [_rows.log_entry(job_id, r) for r in rows]

    async def last_logs(self, job_id: str, limit: int) -> LogEntries:
        """The newest ``limit`` entries, oldest first (a log's tail)."""
        rows = await self._all(
            f"SELECT {_rows.LOG_COLUMNS} FROM logs WHERE job_id = %s ORDER BY idx DESC LIMIT %s",
            (job_id, limit),
        )
        return [_rows.log_entry(job_id, r) for r in rows[::-1]]

    async def attempts(self, job_id: str, after: int, limit: int) -> AttemptSummaries:
        """Attempts numbered after ``after``, oldest first."""
        rows = await self._all(
            f"SELECT {_rows.SUMMARY_COLUMNS} FROM attempts WHERE job_id = %s AND attempt > %s "
            "ORDER BY attempt LIMIT %s",
            (job_id, after, limit),
        )
        return [_rows.summary(r) for r in rows]

    async def current_features(self, job_ids: Sequence[str]) -> FeaturesByJob:
        """What the latest attempt of each job negotiated, where it is stored."""
        if not job_ids:
            return {}
        rows = await self._all(
            "SELECT a.job_id, a.features FROM attempts a JOIN jobs j "
            "ON j.id = a.job_id AND j.attempt = a.attempt WHERE a.job_id = ANY(%s)",
            (list(job_ids),),
        )
        return {job_id: _rows.load(features) for job_id, features in rows}

    async def claim(
        self, owner: str, now: int, limits: Mapping[str, int], prepare: Prepare
    ) -> tuple[Job, AttemptRecord] | None:
        names = list(limits)
        if not names:
            return None
        limited = sorted(n for n in names if limits[n])
        async with self._tx() as conn:
            if limited:
                # The count below is exact only while no other server claims
                # these names: their claims wait here until we commit.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, hashtext(n)) "
                    "FROM (SELECT unnest(%s::text[]) AS n ORDER BY 1) AS names",
                    (_LOCK + _NAME_LIMIT, limited),
                )
                cur = await conn.execute(
                    "SELECT name, count(*) FROM jobs WHERE status = 'running' "
                    "AND name = ANY(%s) GROUP BY name",
                    (limited,),
                )
                running = dict(await cur.fetchall())
                names = [n for n in names if not limits[n] or running.get(n, 0) < limits[n]]
                if not names:
                    return None
            cur = await conn.execute(
                f"SELECT {_rows.JOB_COLUMNS} FROM jobs "
                "WHERE status = 'pending' AND run_at <= %s AND name = ANY(%s) "
                "ORDER BY priority DESC, run_at, seq LIMIT 1 FOR UPDATE SKIP LOCKED",
                (now, names),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            job = _rows.claimed(_rows.job(row), now)
            rec = prepare(job)
            await conn.execute(
                "UPDATE jobs SET status = 'running', owner = %s, attempt = %s, started_at = %s, "
                "out_offset = 0, err_offset = 0, last_seq = 0, cancel_requested = false, "
                "terminal = NULL, pid = 0, pid_start = 0, token = %s, socket_path = %s, "
                "spool_path = %s, out_path = %s, err_path = %s, spawned_at = %s WHERE id = %s",
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
            await conn.execute(
                "INSERT INTO attempts (job_id, attempt, server_id, started_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (job_id, attempt) DO UPDATE SET "
                "server_id = excluded.server_id, started_at = excluded.started_at, pid = NULL, "
                "ended_at = NULL, outcome = NULL, error = NULL, exited_at = NULL, "
                "exit_status = NULL, features = NULL, wire = NULL",
                (job.id, job.attempt, owner, now),
            )
            return job, rec

    async def next_run_at(self, names: Sequence[str]) -> int | None:
        if not names:
            return None
        row = await self._one(
            "SELECT min(run_at) FROM jobs WHERE status = 'pending' AND name = ANY(%s)",
            (list(names),),
        )
        return None if row is None else row[0]

    async def write(self, owner: str, writes: Sequence[Write]) -> Applied:
        """One transaction for the group: two round trips however many writes."""
        async with self._tx() as conn:
            checks = [await self._apply(conn, owner, w) for w in writes]
            if any(isinstance(w, Finish) for w in writes):
                await conn.execute("SELECT pg_notify(%s, '')", (WAKE,))
        # -1: applied whatever the row count (the end of an attempt is not fenced)
        return [expected < 0 or cur.rowcount == expected for cur, expected in checks]

    async def _apply(
        self, conn: psycopg.AsyncConnection[Any], owner: str, w: Write
    ) -> tuple[psycopg.AsyncCursor[Any], int]:
        """Queue the write's statement; (its cursor, the row count that means applied)."""
        current = (w.job_id, w.attempt, owner)
        if isinstance(w, Record):
            sets, args = _rows.batch_sets(w.batch, w.first_index, "%s")
            update = f"UPDATE jobs SET {', '.join(sets) or 'owner = owner'} WHERE {_OURS}"
            if not w.batch.logs:
                return await conn.execute(update, (*args, *current)), 1
            # The log lines go in only when the fenced update matched.
            rows = _rows.log_rows(w.job_id, w.first_index, w.batch.logs)
            columns = list(zip(*rows, strict=True))[1:]
            cur = await conn.execute(
                f"WITH current AS ({update} RETURNING id) "
                "INSERT INTO logs (job_id, idx, timestamp, level, message, data, source) "
                "SELECT current.id, l.* FROM current, "
                "unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], "
                "%s::text[]) AS l",
                (*args, *current, *(list(c) for c in columns)),
            )
            return cur, len(rows)
        if isinstance(w, EndAttempt):
            return await conn.execute(_END_ATTEMPT, _rows.end_attempt_args(w)), -1
        if isinstance(w, SetPid):
            update = f"UPDATE jobs SET pid = %s, pid_start = %s WHERE {_CURRENT} RETURNING id"
            cur = await conn.execute(
                f"WITH current AS ({update}) UPDATE attempts SET pid = %s FROM current "
                "WHERE attempts.job_id = current.id AND attempts.attempt = %s",
                (w.pid, w.pid_start, *current, w.pid, w.attempt),
            )
            return cur, 1
        if w.retry_at is not None:
            update = (
                "UPDATE jobs SET status = 'pending', run_at = %s, error = %s, stack = %s, "
                f"token = NULL WHERE {_CURRENT} RETURNING id"
            )
            values: tuple[Any, ...] = (w.retry_at, w.error, w.stack, *current)
        else:
            update = (
                "UPDATE jobs SET status = %s, result = %s, error = %s, stack = %s, "
                f"finished_at = %s, token = NULL WHERE {_CURRENT} RETURNING id"
            )
            values = (w.status, _rows.dump(w.result), w.error, w.stack, w.now, *current)
        cur = await conn.execute(
            f"WITH current AS ({update}) UPDATE attempts SET ended_at = %s, outcome = %s, "
            "error = %s FROM current WHERE attempts.job_id = current.id AND attempts.attempt = %s",
            (*values, w.now, w.status, w.error, w.attempt),
        )
        return cur, 1

    async def unclaim(self, owner: str, job_id: str, attempt: int) -> None:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET status = 'pending', attempt = attempt - 1, owner = NULL, "
                f"token = NULL WHERE {_CURRENT} AND pid = 0 RETURNING id",
                (job_id, attempt, owner),
            )
            if await cur.fetchone():  # (a rowcount is known only once the pipeline syncs)
                await conn.execute(
                    "DELETE FROM attempts WHERE job_id = %s AND attempt = %s", (job_id, attempt)
                )
            await conn.execute("SELECT pg_notify(%s, '')", (WAKE,))

    async def cancel_pending(self, job_id: str, now: int) -> bool:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = %s "
                "WHERE id = %s AND status = 'pending' RETURNING id",
                (now, job_id),
            )
            return await cur.fetchone() is not None

    async def request_cancel(self, job_id: str) -> str | None:
        async with self._tx() as conn:
            cur = await conn.execute(
                "UPDATE jobs SET cancel_requested = true WHERE id = %s AND status = 'running' "
                "RETURNING owner",
                (job_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            await conn.execute("SELECT pg_notify(%s, %s)", (CANCEL, job_id))
            return str(row[0])

    async def running_attempts(self, owner: str) -> AttemptRecords:
        rows = await self._all(
            f"SELECT {_rows.ATTEMPT_COLUMNS} FROM jobs WHERE owner = %s AND status = 'running'",
            (owner,),
        )
        return [_rows.attempt(r) for r in rows]

    # leases (the database's clock: servers' clocks may disagree)

    async def renew(self, server_id: str, lease_ms: int) -> Lease:
        row = await self._one(
            "INSERT INTO servers (id, started_at, renewed_at, expires_at) "
            f"VALUES (%s, {NOW_MS}, {NOW_MS}, {NOW_MS} + %s) "
            "ON CONFLICT (id) DO UPDATE SET renewed_at = excluded.renewed_at, "
            "expires_at = excluded.expires_at RETURNING id, started_at, renewed_at, expires_at",
            (server_id, lease_ms),
        )
        return Lease(*row)

    async def leases(self) -> Leases:
        rows = await self._all(
            "SELECT id, started_at, renewed_at, expires_at FROM servers ORDER BY id"
        )
        return [Lease(*r) for r in rows]

    async def reap(self, server_id: str, retry_at: RetryAt) -> LostAttempts:
        """Declare the running attempts of every expired lease lost; one reaper per lease."""
        async with self._tx() as conn:
            cur = await conn.execute(
                f"SELECT id FROM servers WHERE expires_at < {NOW_MS} AND id <> %s "
                "FOR UPDATE SKIP LOCKED",
                (server_id,),
            )
            expired = [r[0] for r in await cur.fetchall()]
            if not expired:
                return []
            cur = await conn.execute(
                "SELECT id, name, attempt, max_attempts, owner FROM jobs "
                "WHERE owner = ANY(%s) AND status = 'running' FOR UPDATE",
                (expired,),
            )
            lost = [
                Lost(job_id, name, attempt, owner, retry_at(name, attempt, max_attempts))
                for job_id, name, attempt, max_attempts, owner in await cur.fetchall()
            ]
            for item in lost:
                error = _rows.lost_error(item.owner)
                await conn.execute(
                    f"UPDATE attempts SET ended_at = {NOW_MS}, outcome = 'failed', error = %s "
                    "WHERE job_id = %s AND attempt = %s",
                    (error, item.job_id, item.attempt),
                )
                if item.retry_at is not None:
                    await conn.execute(
                        "UPDATE jobs SET status = 'pending', run_at = %s, error = %s, "
                        "owner = NULL, token = NULL WHERE id = %s",
                        (item.retry_at, error, item.job_id),
                    )
                else:
                    await conn.execute(
                        "UPDATE jobs SET status = 'failed', error = %s, result = 'null', "
                        f"finished_at = {NOW_MS}, owner = NULL, token = NULL WHERE id = %s",
                        (error, item.job_id),
                    )
            await conn.execute("DELETE FROM servers WHERE id = ANY(%s)", (expired,))
            await conn.execute("SELECT pg_notify(%s, '')", (WAKE,))
            return lost

    async def leave(self, server_id: str) -> None:
        async with self._tx() as conn:
            await conn.execute("DELETE FROM servers WHERE id = %s", (server_id,))

    # the shared event log

    async def publish(self, origin: str, events: Sequence[tuple[str, str, str]]) -> int:
        """Append (name, job id, JSON data) events; returns the number of the last one."""
        async with self._tx() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK, _EVENT_LOG))
            cur = await conn.execute("SELECT coalesce(max(number), 0) FROM events")
            row = await cur.fetchone()
            last = row[0] if row else 0
            names, jobs, data = (list(c) for c in zip(*events, strict=True))
            await conn.execute(
                "INSERT INTO events (number, origin, name, job_id, data) "
                "SELECT %s + ordinality, %s, e.name, e.job_id, e.data "
                "FROM unnest(%s::text[], %s::text[], %s::text[]) WITH ORDINALITY "
                "AS e(name, job_id, data)",
                (last, origin, names, jobs, data),
            )
            await conn.execute("SELECT pg_notify(%s, '')", (EVENTS,))
            return int(last + len(events))

    async def events_after(self, number: int, limit: int) -> StoredEvents:
        rows = await self._all(
            "SELECT number, origin, name, job_id, data FROM events WHERE number > %s "
            "ORDER BY number LIMIT %s",
            (number, limit),
        )
        return [StoredEvent(n, o, name, j, _rows.load(d)) for n, o, name, j, d in rows]

    async def last_event(self) -> int:
        row = await self._one("SELECT coalesce(max(number), 0) FROM events")
        return int(row[0]) if row else 0

    async def prune_events(self, keep: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "DELETE FROM events WHERE number <= (SELECT max(number) FROM events) - %s",
                (keep,),
            )

    # notifications

    async def watch(self, on_notice: OnNotice) -> None:
        """LISTEN until cancelled, reconnecting; after a reconnect, every channel
        is announced once, since notifications sent meanwhile are gone."""
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            except psycopg.OperationalError as exc:
                log.warning("database: cannot listen (%s); retrying", exc)
                await asyncio.sleep(LISTEN_RETRY_SECONDS)
                continue
            try:
                async with conn:
                    for channel in (WAKE, CANCEL, EVENTS):
                        await conn.execute(f"LISTEN {channel}")
                    if not first:
                        log.info("database: listening again")
                        for channel in (WAKE, CANCEL, EVENTS):
                            on_notice(channel, "")
                    first = False
                    async for notice in conn.notifies():
                        on_notice(notice.channel, notice.payload)
            except psycopg.OperationalError as exc:
                log.warning("database: lost the listening connection (%s); reconnecting", exc)
                await asyncio.sleep(LISTEN_RETRY_SECONDS)

"""Rows to records: the columns both stores select, and JSON in text columns.

JSON is stored as text, not as PostgreSQL's jsonb, so that a job's data,
result and checkpoint come back exactly as the worker sent them (jsonb
reorders keys and drops duplicates).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from ..models import AttemptSummary, Job, LogEntry
from ._contract import AttemptRecord

JOB_COLUMNS = (
    "id, name, data, status, attempt, max_attempts, priority, run_at, progress_percent, "
    "progress_message, progress_data, result, error, stack, pid, created_at, started_at, "
    "finished_at, checkpoint"
)
ATTEMPT_COLUMNS = (
    "id, name, attempt, pid, pid_start, token, socket_path, spool_path, out_path, err_path, "
    "out_offset, err_offset, last_seq, log_count, spawned_at, cancel_requested, max_attempts, "
    "terminal"
)
LOG_COLUMNS = "idx, timestamp, level, message, data, source"
SUMMARY_COLUMNS = (
    "job_id, attempt, server_id, pid, started_at, ended_at, outcome, error, exited_at, "
    "exit_status, features, wire"
)


def list_query(
    status: str | None, name: str | None, limit: int, before: str | None, mark: str
) -> tuple[str, tuple[Any, ...]]:
    """The jobs list (newest first, keyset paging) for either store; ``mark`` is the
    driver's placeholder (``?`` for SQLite, ``%s`` for psycopg)."""
    where: list[str] = []
    args: list[Any] = []
    if status is not None:
        where.append(f"status = {mark}")
        args.append(status)
    if name is not None:
        where.append(f"name = {mark}")
        args.append(name)
    if before is not None:
        where.append(f"seq < coalesce((SELECT seq FROM jobs WHERE id = {mark}), 0)")
        args.append(before)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    sql = f"SELECT {JOB_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT {mark}"
    return sql, (*args, limit)


def dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dump_optional(value: Any) -> str | None:
    return None if value is None else dump(value)


def load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def job(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        name=row[1],
        data=load(row[2]),
        status=row[3],
        attempt=row[4],
        max_attempts=row[5],
        priority=row[6],
        run_at=row[7],
        progress_percent=row[8],
        progress_message=row[9],
        progress_data=load(row[10]),
        result=load(row[11]),
        error=row[12],
        stack=row[13],
        pid=row[14],
        created_at=row[15],
        started_at=row[16],
        finished_at=row[17],
        checkpoint=load(row[18]),
    )


def attempt(r: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(
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
        terminal=load(r[17]),
    )


def summary(r: Sequence[Any]) -> AttemptSummary:
    return AttemptSummary(
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
        features=load(r[10]),
        wire=load(r[11]),
    )


def end_attempt_args(w: Any) -> tuple[Any, ...]:
    features = None if w.features is None else dump(list(w.features))
    return (w.exited_at, w.exit_status, features, dump(w.wire), w.job_id, w.attempt)


def log_entry(job_id: str, r: Sequence[Any]) -> LogEntry:
    return LogEntry(job_id, r[0], r[1], r[2], r[3], load(r[4]), r[5])


def log_rows(job_id: str, first_index: int, logs: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [
        (job_id, first_index + i, e.timestamp, e.level, e.message, dump_optional(e.data), e.source)
        for i, e in enumerate(logs)
    ]


def batch_sets(batch: Any, first_index: int, mark: str) -> tuple[list[str], list[Any]]:
    """The SET clauses of a Record and their arguments (``mark``: ? or %s)."""
    sets: list[str] = []
    args: list[Any] = []
    if batch.logs:
        sets.append(f"log_count = {mark}")
        args.append(first_index + len(batch.logs) - 1)
    if batch.progress is not None:
        # MSG-4: a progress without message leaves the previous one standing
        sets.append(
            f"progress_percent = {mark}, progress_message = coalesce({mark}, progress_message), "
            f"progress_data = {mark}"
        )
        percent, message, data = batch.progress
        args += [percent, message, dump_optional(data)]
    if batch.checkpoint is not None:
        sets.append(f"checkpoint = {mark}")
        args.append(dump(batch.checkpoint[0]))
    for column in ("last_seq", "out_offset", "err_offset"):
        value = getattr(batch, column)
        if value is not None:
            sets.append(f"{column} = {mark}")
            args.append(value)
    if batch.terminal is not None:
        sets.append(f"terminal = {mark}")
        args.append(dump(batch.terminal))
    return sets, args


def claimed(job: Job, now: int) -> Job:
    """The job as a claim makes it: running, its next attempt."""
    return dataclasses.replace(
        job,
        status="running",
        attempt=job.attempt + 1,
        started_at=job.started_at if job.started_at is not None else now,
    )


def lost_error(owner: str) -> str:
    return f"attempt lost: server {owner} stopped renewing its lease"

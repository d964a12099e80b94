"""Durable state behind one async interface: SQLite (the default) or PostgreSQL.

``database`` is a file path (SQLite, WAL, one host) or a ``postgresql://``
URL (several servers on any hosts share one queue). ``open_store`` opens
either and applies the missing migrations; see ``_contract`` for what every
store promises and ``_schema`` for the migrations.
"""

from __future__ import annotations

from ._contract import (
    CANCEL,
    EVENTS,
    WAKE,
    AttemptRecord,
    AttemptRecords,
    AttemptSummaries,
    Batch,
    EndAttempt,
    FeaturesByJob,
    Finish,
    Jobs,
    Lease,
    LogEntries,
    Lost,
    NewLog,
    Prepare,
    Record,
    SetPid,
    SharedStore,
    Store,
    StoredEvent,
    Write,
)
from ._sqlite import SQLiteStore

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(database: str) -> bool:
    return database.startswith(URL_SCHEMES)


async def open_store(database: str) -> Store:
    """The store named by ``database``, open and migrated. OSError when it cannot be opened."""
    if is_url(database):
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise OSError(
                "a postgresql:// database needs psycopg: pip install 'extjob[postgres]'"
            ) from exc
        return await PostgresStore(database).open()
    return await SQLiteStore(database).open()


__all__ = [
    "CANCEL",
    "EVENTS",
    "URL_SCHEMES",
    "WAKE",
    "AttemptRecord",
    "AttemptRecords",
    "AttemptSummaries",
    "Batch",
    "EndAttempt",
    "FeaturesByJob",
    "Finish",
    "Jobs",
    "Lease",
    "LogEntries",
    "Lost",
    "NewLog",
    "Prepare",
    "Record",
    "SQLiteStore",
    "SetPid",
    "SharedStore",
    "Store",
    "StoredEvent",
    "Write",
    "is_url",
    "open_store",
]

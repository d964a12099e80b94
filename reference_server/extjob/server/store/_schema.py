"""Versioned migrations of both stores, applied at start.

A migration is appended, never edited: a database records the versions it
has (SQLite in ``PRAGMA user_version``, PostgreSQL in ``schema_migrations``)
and a starting server applies the missing ones in order, under a lock that
makes concurrent starts apply each exactly once (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock).
"""

from __future__ import annotations

SQLITE: list[str] = [
    # 1: the schema before versioning (IF NOT EXISTS: such files upgrade in place)
    """
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
    """,
    # 2: server leases (several servers of one host on one file)
    """
    CREATE TABLE servers (
        id TEXT PRIMARY KEY,
        started_at INTEGER NOT NULL,
        renewed_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    """,
]

POSTGRES: list[str] = [
    # 1: jobs, their logs, server leases, the shared event log
    """
    CREATE TABLE jobs (
        seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text NOT NULL UNIQUE,
        name text NOT NULL,
        data text NOT NULL,
        status text NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL,
        priority integer NOT NULL DEFAULT 0,
        run_at bigint NOT NULL,
        progress_percent double precision,
        progress_message text,
        progress_data text,
        result text,
        error text,
        stack text,
        checkpoint text,
        created_at bigint NOT NULL,
        started_at bigint,
        finished_at bigint,
        owner text,
        pid integer,
        pid_start bigint,
        token text,
        socket_path text,
        spool_path text,
        out_path text,
        err_path text,
        out_offset bigint NOT NULL DEFAULT 0,
        err_offset bigint NOT NULL DEFAULT 0,
        last_seq bigint NOT NULL DEFAULT 0,
        log_count bigint NOT NULL DEFAULT 0,
        spawned_at double precision,
        cancel_requested boolean NOT NULL DEFAULT false,
        terminal text
    );
    CREATE INDEX jobs_queue ON jobs (priority DESC, run_at, seq) WHERE status = 'pending';
    CREATE INDEX jobs_running ON jobs (owner, name) WHERE status = 'running';
    CREATE INDEX jobs_status_seq ON jobs (status, seq);
    CREATE INDEX jobs_name_seq ON jobs (name, status, seq);
    CREATE TABLE logs (
        job_id text NOT NULL,
        idx bigint NOT NULL,
        timestamp bigint NOT NULL,
        level text NOT NULL,
        message text NOT NULL,
        data text,
        source text NOT NULL,
        PRIMARY KEY (job_id, idx)
    );
    CREATE TABLE attempts (
        job_id text NOT NULL,
        attempt integer NOT NULL,
        server_id text NOT NULL,
        pid integer,
        started_at bigint NOT NULL,
        ended_at bigint,
        outcome text,
        error text,
        exited_at bigint,
        exit_status integer,
        features text,
        wire text,
        PRIMARY KEY (job_id, attempt)
    );
    CREATE TABLE servers (
        id text PRIMARY KEY,
        started_at bigint NOT NULL,
        renewed_at bigint NOT NULL,
        expires_at bigint NOT NULL
    );
    CREATE TABLE events (
        number bigint PRIMARY KEY,
        origin text NOT NULL,
        name text NOT NULL,
        job_id text NOT NULL,
        data text NOT NULL
    );
    CREATE TABLE cluster (
        id text NOT NULL
    );
    INSERT INTO cluster (id) VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 8));
    """,
]

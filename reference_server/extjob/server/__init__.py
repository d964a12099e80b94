"""The extjob reference server: runs external jobs per ``protocol/SPEC.md``.

Embedding it::

    from extjob.server import JobServer, load_config

    config = load_config("extjob.toml")        # ServerConfig; or ServerConfig(...) in code
    async with JobServer(config) as server:    # store: config.database, SQLite or PostgreSQL
        server.register_external("resize", command="python3", args=["resize.py"],
                                 heartbeat_timeout_ms=30000, max_attempts=3)
        job_id = await server.enqueue("resize", {"src": "a.png"}, priority=5)
        with server.events.subscribe("job.*") as events:
            async for event in events:         # Event(id, name, job_id, data, time)
                ...
        job = await server.get(job_id)         # Job | None, .to_json()
        await server.list(status="running")    # newest first
        await server.logs(job_id, after=0)     # LogEntry list, 1-based stable indexes
        await server.cancel(job_id)            # False if unknown or finished
        await server.running(); await server.counts(); server.metrics

``server.events.on("job.*.completed", callback)`` registers a synchronous
callback. ``extjob.server.main.run(config_path, drain=False)`` runs a server
until SIGTERM or SIGINT; ``python -m extjob.server CONFIG [--drain]`` does
the same from a shell.

How it keeps its promises:

- Workers are spawned in their own process group (SRV-8) with the payload
  on stdin (a private file, unlinked at once) and their stdout/stderr
  redirected to files that outlive the server (SRV-7); each attempt gets its
  own socket (mode 0600 in a 0700 directory) and a fresh 256-bit token
  (TRANS-2, AUTH-1), so a connection is bound to one attempt of one job.
- Every read of a connection is recorded in one store transaction, then
  acknowledged (REPLAY-2); duplicates are dropped by ``seq`` (REPLAY-5).
  Heartbeats only refresh an in-memory receipt time (HB-3, HB-4).
- Stopping (SIGTERM, Ctrl-C, or even SIGKILL) leaves the workers running. On
  start the server listens again on every running attempt's socket, then
  re-adopts each worker whose PID *and* start time still match, collects the
  spool file of each one that is gone, and fails the rest as lost.
"""

from .config import JobDefinition, ServerConfig, load_config
from .events import EventBus, Subscription
from .models import Event, Job, LogEntry, Metrics
from .server import JobServer
from .store import SQLiteStore, Store, open_store

__all__ = [
    "Event",
    "EventBus",
    "Job",
    "JobDefinition",
    "JobServer",
    "LogEntry",
    "Metrics",
    "SQLiteStore",
    "ServerConfig",
    "Store",
    "Subscription",
    "load_config",
    "open_store",
]

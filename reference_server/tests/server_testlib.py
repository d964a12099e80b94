"""Helpers for the reference server's tests (imported by name: conftest puts this
directory on sys.path, since pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from extjob.server import Event, Job, JobServer, ServerConfig, Store, open_store

REPO = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent / "workers"
PYTHON = sys.executable


def make_config(root: Path, **options: Any) -> ServerConfig:
    options.setdefault("poll_interval_ms", 50)
    options.setdefault("database", str(root / "jobs.db"))
    options.setdefault("socket_dir", str(root / "s"))
    options.setdefault("spool_dir", str(root / "spool"))
    return ServerConfig(**options)


def kill_groups(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_finished(server: JobServer, job_id: str, timeout: float = 15.0) -> Any:
    """Wait until the job is completed, failed or cancelled; return it."""

    async def finished() -> bool:
        job = await server.get(job_id)
        return job is not None and job.status in ("completed", "failed", "cancelled")

    await wait_for(finished, timeout, f"job {job_id} to finish")
    return await server.get(job_id)


async def next_event(
    sub: Any, name: str, job_id: str | None = None, timeout: float = 10.0
) -> Event:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {name} event within {timeout}s")
        event = await sub.get(timeout=remaining)
        if event.name == name and (job_id is None or event.job_id == job_id):
            return event


async def wait_logs(server: JobServer, job_id: str, count: int, timeout: float = 10.0) -> list[Any]:
    """Wait until the job has at least ``count`` log entries; return them all."""

    async def enough() -> bool:
        return len(await server.logs(job_id, limit=1_000_000)) >= count

    await wait_for(enough, timeout, f"{count} log entries of {job_id}")
    return await server.logs(job_id, limit=1_000_000)


class SyncStore:
    """A store for test code outside an event loop (a second process sharing the
    database, as a drill's observer): every call runs to completion on its own loop."""

    def __init__(self, database: str) -> None:
        self._loop = asyncio.new_event_loop()
        self.store: Store = self._loop.run_until_complete(open_store(database))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.store, name)
        return lambda *args: self._loop.run_until_complete(method(*args))

    def enqueue(self, job_id: str, name: str, data: Any, max_attempts: int = 1) -> str:
        now = int(time.time() * 1000)
        self.create(
            Job.pending(
                job_id,
                name,
                data,
                max_attempts=max_attempts,
                priority=0,
                run_at=now,
                created_at=now,
            )
        )
        return job_id

    def close(self) -> None:
        self._loop.run_until_complete(self.store.close())
        self._loop.close()

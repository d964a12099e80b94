"""Shared pieces of the server benchmarks: a throwaway server, process stats."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from extjob.server import JobServer, ServerConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOAD_WORKER = [sys.executable, str(HERE / "_server_worker.py")]


@asynccontextmanager
async def temp_server(root: Path, **options: object) -> AsyncIterator[JobServer]:
    config = ServerConfig(
        database=str(root / "jobs.db"),
        socket_dir=str(root / "s"),
        spool_dir=str(root / "spool"),
        poll_interval_ms=20,
        **options,  # type: ignore[arg-type]
    )
    server = JobServer(config)
    await server.start()
    try:
        yield server
    finally:
        pids = [run.rec.pid for run in server.runs.values() if run.rec.pid]
        await server.stop()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.killpg(pid, 9)


def temp_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="xb", dir="/tmp"))


def remove(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"benchmark: timed out waiting for {what}")
        await asyncio.sleep(0.005)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_async(main: Callable[[], Awaitable[list[str]]]) -> list[str]:
    return asyncio.run(main())

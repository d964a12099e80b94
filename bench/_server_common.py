"""Shared pieces of the server benchmarks: a throwaway server (in-process or deployed)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

from extjob.server import JobServer, ServerConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOAD_WORKER = [sys.executable, str(HERE / "_server_worker.py")]


@asynccontextmanager
async def temp_server(root: Path, **options: object) -> AsyncIterator[JobServer]:
    defaults: dict[str, object] = {
        "database": str(root / "jobs.db"),  # or a postgresql:// URL (the cluster benchmarks)
        "socket_dir": str(root / "s"),
        "spool_dir": str(root / "spool"),
        "poll_interval_ms": 20,
    }
    config = ServerConfig(**{**defaults, **options})  # type: ignore[arg-type]
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


def process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) another process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_async(main: Callable[[], Awaitable[list[str]]]) -> list[str]:
    return asyncio.run(main())


class DeployedServer:
    """A real ``extjob serve`` process (HTTP and SSE on), as a team runs it.

    ``jobs`` maps a job name to its command line; at most ``concurrency`` run
    at once (the server's default: 16). The HTTP token is random; the
    server's stderr goes to ``work/server.log``.
    """

    def __init__(self, work: Path, jobs: dict[str, list[str]], concurrency: int = 16) -> None:
        self.token = secrets.token_hex(16)
        config = work / "extjob.toml"
        lines = [
            'database = "db.sqlite"',
            'spool_dir = "spool"',
            f'socket_dir = "{work}/s"',
            f"concurrency = {concurrency}",
            "[http]",
            "port = 0",
            f'token = "{self.token}"',
        ]
        for name, argv in jobs.items():
            lines += [
                f"[jobs.{name}]",
                f"command = {json.dumps(argv[0])}",
                f"args = {json.dumps(argv[1:])}",
                "heartbeat_timeout_ms = 600000",
            ]
        config.write_text("\n".join(lines) + "\n")
        with (work / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "extjob.cli", "serve", "--config", str(config)],
                stdout=subprocess.PIPE, stderr=log, env={**os.environ, "EXTJOB_TOKEN": ""},
            )  # fmt: skip
        assert self.process.stdout is not None
        first = self.process.stdout.readline().decode()
        self.url = first.removeprefix("extjob: listening on ").strip().rstrip("/")

    def request(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = Request(f"{self.url}{path}", data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        with urlopen(request, timeout=30) as response:
            return json.load(response)

    def enqueue(self, name: str, data: object) -> str:
        return str(self.request("POST", "/api/jobs", {"name": name, "data": data})["id"])

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

"""Benchmark: many concurrent jobs, and a restart with many live jobs.

Starts N sleeping shell jobs (the shell wrapper's fixture worker, scenario
``sleep``), waits until every one has connected and started, and reports the
server's RSS and how many file descriptors it holds per job. Then it cancels
all but R of them, stops the server gracefully (the workers keep running),
starts a new one on the same database and measures how long until all R have
reconnected. Targets (issue 4): N = 1,000 under 200 MB RSS with at most 4
descriptors per job; R = 500 all reconnected within 2 s of start.

Then the crash (issue 15): R jobs under a real ``extjob serve``, which is
killed with SIGKILL; a new server process on the same files, and the time
from its start until every worker is back. A worker counts as back at its
welcome, not when its connection is accepted: the new server emits
``job.reconnected`` once the worker's hello was checked and answered (both
restarts are timed that way).

Run: ``python bench/server_scale.py [--smoke]`` or ``python bench/run.py server_scale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from _server_common import (
    REPO,
    DeployedServer,
    open_fds,
    remove,
    rss_mb,
    run_async,
    temp_root,
    until,
)

from extjob.server import JobServer, ServerConfig

SIZES = {False: (1000, 500), True: (20, 10)}
# EXTJOB_BENCH_SCALE="JOBS,RESTART" overrides the full size (e.g. on a shared machine).
if os.environ.get("EXTJOB_BENCH_SCALE"):
    _jobs, _keep = os.environ["EXTJOB_BENCH_SCALE"].split(",")
    SIZES[False] = (int(_jobs), int(_keep))
SHELL_FIXTURE = str(REPO / "wrappers" / "shell" / "fixture_worker.sh")
# EXTJOB_BENCH_SCALE_WORKER=PATH runs that fixture worker binary (say, the Go
# one) instead of the shell fixture, which needs ~20 MB and 7 processes a job.
WORKER = os.environ.get("EXTJOB_BENCH_SCALE_WORKER")


def config(root: object, jobs: int, database: str = "jobs.db") -> ServerConfig:
    server = ServerConfig(
        database=f"{root}/{database}",
        socket_dir=f"{root}/s",
        spool_dir=f"{root}/spool",
        concurrency=jobs,
        poll_interval_ms=20,
    )
    return server


COMMAND = [WORKER] if WORKER else ["bash", SHELL_FIXTURE]


def define(server: JobServer, heartbeat_timeout_ms: int = 60_000) -> None:
    server.register_external(
        "sleepy",
        command=COMMAND[0],
        args=COMMAND[1:],
        heartbeat_timeout_ms=heartbeat_timeout_ms,
        cancel_deadline_ms=200,
        kill_grace_ms=200,
    )


def started(server: JobServer) -> int:
    return sum(
        1 for run in server.runs.values() if run.connections and run.attempt.recorded_seq >= 1
    )


def welcomed(server: JobServer) -> list[int]:
    """A counter of the workers the server has welcomed back (job.reconnected)."""
    back = [0]

    def count(_event: object) -> None:
        back[0] += 1

    server.events.on("job.reconnected", count)
    return back


def connected_jobs(deployed: DeployedServer) -> int:
    """Running jobs whose worker has negotiated with the deployed server."""
    count, cursor = 0, None
    while True:
        query = "/api/jobs?status=running&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        page = deployed.request("GET", query)
        count += sum(1 for job in page["jobs"] if job.get("features") is not None)
        cursor = page["nextCursor"]
        if cursor is None:
            return count


async def crash_restart(root: Path, keep: int) -> str:
    """SIGKILL a deployed server with ``keep`` live jobs; time a new process to
    every worker's welcome."""
    work = root / "crash"
    work.mkdir()
    deployed = DeployedServer(work, {"sleepy": COMMAND}, concurrency=keep)
    pids: list[int] = []
    try:
        for _ in range(keep):
            deployed.enqueue("sleepy", {"scenario": "sleep", "ms": 600_000})
        deadline = time.monotonic() + 900
        while connected_jobs(deployed) < keep:
            if time.monotonic() > deadline:
                raise TimeoutError("benchmark: the deployed workers never all connected")
            await asyncio.sleep(0.2)
        pids = [
            job["pid"]
            for job in deployed.request("GET", "/api/jobs?status=running&limit=1000")["jobs"]
            if job.get("pid")
        ]
        deployed.process.send_signal(signal.SIGKILL)
        deployed.process.wait(30)
        second = JobServer(config(work, keep, database="db.sqlite"))
        define(second, heartbeat_timeout_ms=600_000)  # as DeployedServer configures it
        back = welcomed(second)
        t0 = time.perf_counter()
        await second.start()
        try:
            await until(lambda: back[0] >= keep, 120, "the workers to be welcomed back")
            took = time.perf_counter() - t0
            return (
                f"  SIGKILL of extjob serve with {keep:,} live jobs, then a new server: "
                f"all welcomed back {took:.2f} s after start; {second.metrics.lost} lost"
            )
        finally:
            await second.stop()
    finally:
        if deployed.process.poll() is None:
            deployed.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, 9)


def run(smoke: bool) -> list[str]:
    jobs, keep = SIZES[smoke]

    async def main() -> list[str]:
        root = temp_root()
        pids: list[int] = []
        kind = f"{WORKER} fixture" if WORKER else "shell"
        lines = [f"server_scale: concurrent sleeping {kind} jobs (issue 4)"]
        try:
            first = JobServer(config(root, jobs))
            define(first)
            await first.start()
            rss0, fds0 = rss_mb(), open_fds()
            ids = [
                await first.enqueue("sleepy", {"scenario": "sleep", "ms": 600_000})
                for _ in range(jobs)
            ]
            t0 = time.perf_counter()
            await until(lambda: started(first) == jobs, 900, f"{jobs} jobs to start")
            ramp = time.perf_counter() - t0
            rss, fds = rss_mb(), open_fds()
            lines.append(
                f"  {jobs:,} jobs running (all started in {ramp:.1f} s): server RSS {rss:.0f} MB "
                f"({(rss - rss0) * 1024 / jobs:.0f} KB per job), "
                f"{(fds - fds0) / jobs:.2f} file descriptors per job "
                "(targets: < 200 MB, <= 4 per job)"
            )
            for job_id in ids[keep:]:
                await first.cancel(job_id)
            await until(lambda: len(first.runs) == keep, 300, "the cancelled jobs to end")
            pids = [run.rec.pid for run in first.runs.values()]
            await first.stop()
            second = JobServer(config(root, jobs))
            define(second)
            back = welcomed(second)
            t0 = time.perf_counter()
            await second.start()
            try:
                await until(lambda: back[0] >= keep, 60, "the workers to be welcomed back")
                took = time.perf_counter() - t0
                lines.append(
                    f"  graceful restart with {keep:,} live jobs: all welcomed back {took:.2f} s "
                    f"after start (target < 2 s); {second.metrics.lost} lost"
                )
            finally:
                await second.stop()
            lines.append(await crash_restart(root, keep))
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, 9)
            remove(root)
        return lines

    return run_async(main)


if __name__ == "__main__":
    for line in run("--smoke" in sys.argv):
        print(line)

"""Benchmark: many concurrent jobs, and a restart with many live jobs.

Starts N sleeping shell jobs (the shell wrapper's fixture worker, scenario
``sleep``), waits until every one has connected and started, and reports the
server's RSS and how many file descriptors it holds per job. Then it cancels
all but R of them, stops the server gracefully (the workers keep running),
starts a new one on the same database and measures how long until all R have
reconnected. Targets (issue 4): N = 1,000 under 200 MB RSS with at most 4
descriptors per job; R = 500 all reconnected within 2 s of start.

Run: ``python bench/server_scale.py [--smoke]`` or ``python bench/run.py server_scale``.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from _server_common import REPO, open_fds, remove, rss_mb, run_async, temp_root, until

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


def config(root: object, jobs: int) -> ServerConfig:
    server = ServerConfig(
        database=f"{root}/jobs.db",
        socket_dir=f"{root}/s",
        spool_dir=f"{root}/spool",
        concurrency=jobs,
        poll_interval_ms=20,
    )
    return server


def define(server: JobServer) -> None:
    server.register_external(
        "sleepy",
        command=WORKER or "bash",
        args=[] if WORKER else [SHELL_FIXTURE],
        heartbeat_timeout_ms=60_000,
        cancel_deadline_ms=200,
        kill_grace_ms=200,
    )


def started(server: JobServer) -> int:
    return sum(
        1 for run in server.runs.values() if run.connections and run.attempt.recorded_seq >= 1
    )


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
            t0 = time.perf_counter()
            await second.start()
            try:
                await until(
                    lambda: all(r.connections for r in second.runs.values()),
                    60,
                    "the workers to reconnect",
                )
                took = time.perf_counter() - t0
                lines.append(
                    f"  restart with {keep:,} live jobs: all reconnected {took:.2f} s after start "
                    f"(target < 2 s); {second.metrics.lost} lost"
                )
            finally:
                await second.stop()
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

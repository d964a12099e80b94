"""Benchmark: claims per second with 1, 2 and 3 servers on one PostgreSQL queue.

Real server processes (``python -m extjob.server``), each allowed 64 running
jobs, and a queue of short jobs (``/bin/true``) that all become due at one
moment; measured from that moment until the queue is empty, the figure is
claims (each with its spawn and its outcome) per second for the cluster. On
a machine with few cores the servers share them with PostgreSQL and the
workers, so more servers mean more claimers, not more CPU.

Run: ``python bench/cluster_claims.py [--smoke]`` or ``python bench/run.py cluster_claims``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import _pg
from _cluster_common import TRUE
from _server_common import remove, run_async, temp_root

from extjob.server import Job, open_store
from extjob.server.models import now_ms

JOBS = {False: 2000, True: 100}
LEAD_MS = 8000  # the servers are up and idle before the jobs become due


async def measure(servers: int, jobs: int) -> float:
    url = _pg.database()
    assert url is not None
    root = temp_root()
    procs = []
    store = await open_store(url)
    try:
        for i in range(servers):
            home = root / f"n{i}"
            home.mkdir()
            (home / "extjob.toml").write_text(
                'socket_dir = "s"\nspool_dir = "spool"\nconcurrency = 64\n'
                f'poll_interval_ms = 60000\n[jobs.w]\ncommand = "{TRUE}"\n'
            )
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "extjob.server",
                        str(home / "extjob.toml"),
                        "--database",
                        url,
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 60
        while len(await store.leases()) < servers:
            assert time.monotonic() < deadline, "the servers did not start"
            await asyncio.sleep(0.05)
        due = now_ms() + LEAD_MS
        for first in range(0, jobs, 100):  # ten at a time: the store's pool
            await asyncio.gather(
                *(
                    store.create(
                        Job.pending(
                            f"j_c{i:05d}",
                            "w",
                            None,
                            max_attempts=1,
                            priority=0,
                            run_at=due,
                            created_at=due,
                        )
                    )
                    for i in range(first, min(jobs, first + 100))
                )
            )
        assert now_ms() < due, "enqueueing took longer than the lead"
        while (await store.counts())["pending"]:
            await asyncio.sleep(0.01)
        elapsed = now_ms() - due
        by_server = await store.running_by_owner()
        assert sum(by_server.values()) <= servers * 64
        return jobs / (elapsed / 1000)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        await store.close()
        remove(root)


def run(smoke: bool) -> list[str]:
    async def main() -> list[str]:
        if _pg.database() is None:
            return _pg.skipped("cluster_claims")
        jobs = JOBS[smoke]
        lines = [
            f"cluster_claims: {jobs:,} queued short jobs, claims/s by number of servers (issue 12)"
        ]
        rates = {n: await measure(n, jobs) for n in (1, 2, 3)}
        for n, rate in rates.items():
            lines.append(
                f"  {n} server(s): {rate:,.0f} claims/s ({rate / rates[1]:.2f}x one server)"
            )
        return lines

    return run_async(main)


if __name__ == "__main__":
    for line in run("--smoke" in sys.argv):
        print(line)

"""Benchmark: enqueue -> spawn latency across servers, PostgreSQL wake-ups vs SQLite.

An idle server (its poll interval one minute, so only a wake-up can start a
job) and an enqueuer that is another client of the same database, as
another server is: on PostgreSQL the enqueue's NOTIFY wakes the idle server;
on SQLite nothing can, and the server finds the job at its next poll (the
default 500 ms). Also measured: an enqueue on the running server itself
(SQLite, a local wake-up), the floor of the spawn path. Time is from the
call to enqueue to the worker's process having been started. Targets
(issue 12): PostgreSQL p50 < 5 ms, p99 < 20 ms.

Run: ``python bench/cluster_wakeup.py [--smoke]`` or ``python bench/run.py cluster_wakeup``.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import sys
import time

import _pg
from _cluster_common import TRUE, percentiles, spawn_clock, verdict
from _server_common import remove, run_async, temp_root, temp_server, until

from extjob.server import Job, open_store
from extjob.server.models import now_ms

JOBS = {False: 300, True: 20}


async def measure(database: str | None, jobs: int, poll_ms: int, local: bool) -> list[float]:
    root = temp_root()
    options: dict[str, object] = {"poll_interval_ms": poll_ms}
    if database is not None:
        options["database"] = database
    try:
        with spawn_clock() as spawned:
            async with temp_server(root, **options) as server:
                server.register_external("w", command=TRUE)
                other = await open_store(server.config.database)
                delays = []
                try:
                    for _ in range(jobs):
                        await asyncio.sleep(random.uniform(0.002, 0.01))
                        start = time.time()
                        if local:
                            job_id = await server.enqueue("w")
                        else:
                            job_id = f"j_{secrets.token_hex(8)}"
                            now = now_ms()
                            job = Job.pending(
                                job_id,
                                "w",
                                None,
                                max_attempts=1,
                                priority=0,
                                run_at=now,
                                created_at=now,
                            )
                            await other.create(job)
                        await until(lambda j=job_id: j in spawned, 10, "the spawn")
                        delays.append((spawned[job_id] - start) * 1000)
                finally:
                    await other.close()
                return delays
    finally:
        remove(root)


def run(smoke: bool) -> list[str]:
    async def main() -> list[str]:
        url = _pg.database()
        if url is None:
            return _pg.skipped("cluster_wakeup")
        n = JOBS[smoke]
        pg = await measure(url, n, 60_000, local=False)
        sqlite_other = await measure(None, max(10, n // 10), 500, local=False)
        sqlite_local = await measure(None, n, 60_000, local=True)
        p50, p99 = percentiles(pg)
        lines = ["cluster_wakeup: enqueue -> spawn on an idle server (issue 12)"]
        lines.append(
            f"  PostgreSQL, enqueued by another client (NOTIFY): p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            f" (target p50 < 5 ms: {verdict(p50 < 5)}; p99 < 20 ms: {verdict(p99 < 20)})"
        )
        o50, o99 = percentiles(sqlite_other)
        lines.append(
            f"  SQLite, enqueued by another client (next poll, 500 ms): p50 {o50:.2f} ms, "
            f"p99 {o99:.2f} ms; PostgreSQL wake-ups are {o50 / p50:.0f}x faster at p50"
        )
        l50, l99 = percentiles(sqlite_local)
        lines.append(
            f"  SQLite, enqueued on the server itself (local wake-up): p50 {l50:.2f} ms, "
            f"p99 {l99:.2f} ms; PostgreSQL/local ratio at p50 {p50 / l50:.1f}"
        )
        return lines

    return run_async(main)


if __name__ == "__main__":
    for line in run("--smoke" in sys.argv):
        print(line)

"""Benchmark: messages/s the reference server records, against a bare reader.

One worker sends 100,000 progress messages as fast as it can, then 100
workers send 10,000 each. The same load generator (``_server_worker.py``)
then writes the same lines to a bare asyncio NDJSON reader (split lines,
parse JSON, count) on a Unix socket in the same run. The server's figure is
what it durably recorded: from the "go" signal to the last ``completed``
event, which comes after the last batch was committed and acknowledged.
Targets (issue 4): at least 50% of the bare reader, at least 100,000
messages/s aggregate.

Run: ``python bench/server_ingest.py [--smoke]`` or ``python bench/run.py server_ingest``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import orjson
from _server_common import LOAD_WORKER, remove, run_async, temp_root, temp_server, until

SIZES = {False: [(1, 100_000), (100, 10_000)], True: [(1, 5_000), (10, 500)]}


async def server_rate(workers: int, count: int) -> float:
    root = temp_root()
    go = root / "go"
    try:
        async with temp_server(root, concurrency=workers + 10) as server:
            server.register_external(
                "load", command=LOAD_WORKER[0], args=LOAD_WORKER[1:], heartbeat_timeout_ms=600_000
            )
            finished: list[float] = []
            server.events.on("job.completed", lambda _e: finished.append(time.perf_counter()))
            data = {"mode": "blast", "count": count, "go": str(go)}
            ids = [await server.enqueue("load", data) for _ in range(workers)]
            await until(
                lambda: (
                    len(server.runs) == workers
                    and all(run.attempt.recorded_seq >= 1 for run in server.runs.values())
                ),
                300,
                "every load worker to start",
            )
            start = time.perf_counter()
            go.touch()
            await until(lambda: len(finished) == workers, 600, "every load worker to finish")
            elapsed = finished[-1] - start
            for job_id in ids:
                job = await server.get(job_id)
                assert job is not None and job.status == "completed", job
            return workers * (count + 1) / elapsed
    finally:
        remove(root)


async def bare_rate(workers: int, count: int) -> float:
    root = temp_root()
    path, go = root / "bare.sock", root / "go"
    loop = asyncio.get_running_loop()
    expected = workers * (count + 2)
    state = {"lines": 0, "connections": 0}
    done: asyncio.Future[float] = loop.create_future()

    class BareReader(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.partial = b""
            state["connections"] += 1

        def data_received(self, data: bytes) -> None:
            lines = (self.partial + data).split(b"\n")
            self.partial = lines.pop()
            for line in lines:
                if line:
                    orjson.loads(line)
                    state["lines"] += 1
            if state["lines"] >= expected and not done.done():
                done.set_result(time.perf_counter())

    listener = await loop.create_unix_server(BareReader, str(path))
    procs = []
    try:
        for i in range(workers):
            payload = {
                "jobId": f"b{i}",
                "name": "load",
                "socketPath": str(path),
                "data": {"mode": "blast", "count": count, "go": str(go)},
            }
            proc = subprocess.Popen(LOAD_WORKER, stdin=subprocess.PIPE)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(payload).encode() + b"\n")
            proc.stdin.close()
            procs.append(proc)
        await until(lambda: state["lines"] >= workers, 300, "every load worker to connect")
        start = time.perf_counter()
        go.touch()
        end = await asyncio.wait_for(done, 600)
        return (expected - workers) / (end - start)
    finally:
        listener.close()
        for proc in procs:
            proc.wait()
        remove(root)


def run(smoke: bool) -> list[str]:
    async def main() -> list[str]:
        lines = ["server_ingest: progress messages recorded per second (issue 4)"]
        total_server = 0.0
        for workers, count in SIZES[smoke]:
            bare = await bare_rate(workers, count)
            served = await server_rate(workers, count)
            total_server = max(total_server, served)
            lines.append(
                f"  {workers:>3} worker(s) x {count:,}: server {served:,.0f} msg/s, "
                f"bare asyncio reader {bare:,.0f} msg/s, ratio {served / bare:.0%} "
                "(target >= 50%)"
            )
        lines.append(f"  best aggregate: {total_server:,.0f} msg/s (target >= 100,000)")
        return lines

    return run_async(main)


if __name__ == "__main__":
    for line in run("--smoke" in sys.argv):
        print(line)

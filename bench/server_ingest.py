"""Benchmark: messages/s the reference server records, against a bare reader.

One worker sends 100,000 progress messages as fast as it can, then 50
workers send 2,000 each. The load generator (``_server_worker.py``) encodes
every line before it says ``started``, so the measured window holds only
sending and reading. The limit, in the same run: the same generator writing
the same lines to a bare asyncio NDJSON reader (split lines, parse JSON,
count) on a Unix socket. That figure is also the proof that the generator
outruns the server: it sends at least that fast.

The server is measured four ways: in-process with no listener, in-process
with one event subscriber (what the HTTP layer is), and deployed (a real
``extjob serve`` with HTTP and SSE on), with no client connected and with
100 SSE clients on ``/api/events`` (read by a thread of this process, whose
CPU is printed: on two cores it competes with the server). The server's
figure is what it durably recorded: from the "go" signal to the job's
completion, which comes after the last batch was committed and acknowledged.

Beside each rate, the CPU time the reading process spent per message in the
window (this process for the bare reader and the in-process server, the
``extjob serve`` process when deployed): the load worker and a busy machine
disturb it far less than the rate, so it says what the server itself costs.

Targets (issue 15): one worker at least 1,000,000 msg/s and at least 35% of
the bare reader; a subscriber or the deployed HTTP layer costs at most 20%.
Every figure is the best of ``ROUNDS`` rounds (the machine is shared).

Where the time goes (``CoreParts``, printed by every run): the core's parts
measured on the load worker's own lines, read by read, and what the server
adds beyond the core. On the 2-core CI-like machine (shared, Dec 2026), one
worker, CPU us per message:

=====================================================  =======
split into lines (``LineBuffer``)                         0.05
JSON parse: one orjson call per line (FRAME-1)            0.35
schema check: one jsonschema-rs call per type and read    0.29
``Message`` objects (one per line: the core's API)        0.22
lifecycle for the read (``Attempt.receive_all``)          0.13
the rest of the core (intake, ack)                        0.06
cyclic GC at Python's default thresholds                  0.31
  (in the core's own pass; the whole server under
  ``extjob serve``'s policy, frozen heap and gen0 at
  50k, is 0.05-0.13 faster: 1.47 against 1.52-1.60)
beyond the core: socket reads, event loop, deliver        0.12
  (one batch and one progress event per read), store
  commit (a thread), acks
the in-process server, whole process                      1.54   640k msg/s
  (520k-640k msg/s, 1.5-1.8 us, from run to run)
the bare asyncio reader (split + orjson, the limit)       0.52   1.85M msg/s
=====================================================  =======

Before the fast path (this bench, same machine, the same day): 3.7 us/msg,
134k msg/s. What limits it now: the two native calls every message needs
(orjson on its line, jsonschema-rs on its object) take ~0.65 us alone, and
each message is a Python dict and a ``Message`` tuple that the collector
scans; 1M msg/s leaves 1 us for everything, so with one schema-valid
``Message`` per line the target is out of reach in Python on this machine:
the best reached is ~640k msg/s in-process, ~690k deployed (35% of the bare
reader). Everything per message that is Python bookkeeping is done per read
(``decode_all``, ``Attempt.receive_all``, a run of progress collected as its
latest); a read with anything unusual is taken line by line, as before.
What is left to win without giving up a check: the ``Message`` tuple per
line (~0.2 us, and half of what the collector scans), if the core handed the
server a read's bodies by type instead; the natives themselves set the floor.

Run: ``python bench/server_ingest.py [--smoke]`` or ``python bench/run.py server_ingest``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.request import Request, urlopen

import orjson
from _server_common import (
    LOAD_WORKER,
    DeployedServer,
    process_cpu,
    remove,
    run_async,
    temp_root,
    temp_server,
    until,
)
from _server_worker import blast_lines

from extjob.protocol import (
    Attempt,
    AttemptState,
    Binding,
    LineBuffer,
    ServerAttempt,
    decode_all,
)
from extjob.protocol._schemas import fast_list_validator, message_schema

SIZES = {False: [(1, 100_000), (50, 2_000)], True: [(1, 5_000), (10, 500)]}
TARGET_RATE = 1_000_000  # one worker
TARGET_SHARE = 0.35  # of the bare reader, one worker
TARGET_LOSS = 0.20  # a subscriber, or the deployed HTTP layer
ROUNDS = 3  # every figure: the best of
SSE_CLIENTS = 100  # the dashboards of the deployed measure with clients


def _against(served: Rate, label: str, figure: Rate, smoke: bool, more: str = "") -> str:
    """A line for ``figure``: what it lost against the in-process ``served``."""
    lost = 1 - figure.per_second / served.per_second
    return (
        f"      {label}: {figure} ({lost:+.0%} lost; "
        f"CPU {figure.cpu_us / served.cpu_us - 1:+.0%}{more})"
        + ("" if smoke else f", target <= {TARGET_LOSS:.0%} lost: {verdict(lost <= TARGET_LOSS)}")
    )


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


class Rate:
    """Messages per second and CPU microseconds per message of one measurement."""

    def __init__(self, messages: int, seconds: float, cpu_seconds: float) -> None:
        self.per_second = messages / seconds
        self.cpu_us = cpu_seconds / messages * 1e6
        self.clients_cpu_us = 0.0  # what SSE clients reading meanwhile took, per message

    def __str__(self) -> str:
        return f"{self.per_second:,.0f} msg/s ({self.cpu_us:.2f} us CPU/msg)"


async def server_rate(
    workers: int, count: int, *, subscriber: bool = False, **options: object
) -> Rate:
    """What the server durably recorded; ``options`` are server settings (a database URL)."""
    root = temp_root()
    go = root / "go"
    try:
        async with temp_server(root, concurrency=workers + 10, **options) as server:
            server.register_external(
                "load", command=LOAD_WORKER[0], args=LOAD_WORKER[1:], heartbeat_timeout_ms=600_000
            )
            finished: list[float] = []
            server.events.on("job.completed", lambda _e: finished.append(time.perf_counter()))
            seen = [0]

            async def listen() -> None:
                with server.events.subscribe("*") as events:
                    async for _event in events:
                        seen[0] += 1

            listener = asyncio.create_task(listen()) if subscriber else None
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
            start, cpu = time.perf_counter(), time.process_time()
            go.touch()
            await until(lambda: len(finished) == workers, 600, "every load worker to finish")
            elapsed, cpu = finished[-1] - start, time.process_time() - cpu
            for job_id in ids:
                job = await server.get(job_id)
                assert job is not None and job.status == "completed", job
            if listener is not None:
                listener.cancel()
                assert seen[0] > 0, "the subscriber saw no event"
            return Rate(workers * (count + 1), elapsed, cpu)
    finally:
        remove(root)


class SseListeners:
    """``count`` SSE streams of ``/api/events`` (what dashboards hold), read
    and thrown away by one thread of this process: the load is the server's."""

    def __init__(self, server: DeployedServer, count: int) -> None:
        headers = {"Authorization": f"Bearer {server.token}", "Accept": "text/event-stream"}
        self.streams = [
            urlopen(Request(f"{server.url}/api/events", headers=headers), timeout=60)
            for _ in range(count)
        ]
        self.received = 0  # bytes
        self.cpu = 0.0  # seconds the reading thread has run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        by_fd = {stream.fileno(): stream for stream in self.streams}
        while not self._stop.is_set() and by_fd:
            ready, _, _ = select.select(list(by_fd), [], [], 0.05)
            for fd in ready:
                self.received += len(by_fd[fd].read1(1 << 16))
            self.cpu = time.thread_time()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for stream in self.streams:
            stream.close()


def deployed_rate(count: int, sse_clients: int = 0) -> Rate:
    """One worker through a real ``extjob serve``; the server's own clock ends
    the window. ``sse_clients``: SSE streams held open meanwhile."""
    with tempfile.TemporaryDirectory(prefix="xj-bench-") as work:
        server = DeployedServer(Path(work), {"load": LOAD_WORKER})
        listeners = SseListeners(server, sse_clients) if sse_clients else None
        try:
            go, ready = Path(work) / "go", Path(work) / "ready"
            job_id = server.enqueue(
                "load", {"mode": "blast", "count": count, "go": str(go), "ready": str(ready)}
            )
            deadline = time.monotonic() + 300
            while (
                not ready.exists()
                or server.request("GET", f"/api/jobs/{job_id}")["status"] != "running"
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("benchmark: the deployed load worker never started")
                time.sleep(0.01)
            start_ms, cpu = time.time() * 1000, process_cpu(server.process.pid)
            clients_cpu = listeners.cpu if listeners is not None else 0.0
            go.touch()
            while (job := server.request("GET", f"/api/jobs/{job_id}"))["status"] == "running":
                if time.monotonic() > deadline + 300:
                    raise TimeoutError("benchmark: the deployed load worker never finished")
                time.sleep(0.02)
            assert job["status"] == "completed", job
            cpu = process_cpu(server.process.pid) - cpu  # ends after the window: an upper bound
            rate = Rate(count + 1, (job["finishedAt"] - start_ms) / 1000, cpu)
            if listeners is not None:
                assert listeners.received, "the SSE clients got nothing"
                rate.clients_cpu_us = (listeners.cpu - clients_cpu) / (count + 1) * 1e6
            return rate
        finally:
            if listeners is not None:
                listeners.close()
            server.close()


async def bare_rate(workers: int, count: int) -> Rate:
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
        await until(lambda: state["lines"] >= workers, 300, "every load worker to start")
        start, cpu = time.perf_counter(), time.process_time()
        go.touch()
        end = await asyncio.wait_for(done, 600)
        return Rate(expected - workers, end - start, time.process_time() - cpu)
    finally:
        listener.close()
        for proc in procs:
            proc.wait()
        remove(root)


READ_BYTES = 256 * 1024  # what one read of the socket delivers (asyncio's max)


class CoreParts:
    """CPU microseconds per message of each part of the core's ingest, on the
    load worker's own lines cut into reads as the socket delivers them.

    Each pass goes read by read and lets a read's results go before the next,
    as the server does (``Intake.release``); the parts are the differences
    between passes that do one step more each (split; parse; + schema check;
    + Message objects = ``decode_all``; + lifecycle), best of a few passes,
    without the cyclic GC, whose share is the core's pass with it less
    without. What is left of the in-process server's figure beyond ``core``
    is the server's own (socket reads, event loop, deliver, store, acks)."""

    def __init__(self, count: int) -> None:
        job_id, token = "j_" + "0" * 16, "t" * 43
        blob = b"".join(blast_lines(job_id, count, int(time.time() * 1000), 2))
        reads = [blob[i : i + READ_BYTES] for i in range(0, len(blob), READ_BYTES)]
        schema = fast_list_validator(message_schema("worker", "progress")).is_valid

        def best(pass_: Callable[[], None], passes: int = 5) -> float:
            times = []
            for _ in range(passes):
                cpu = time.process_time()
                pass_()
                times.append(time.process_time() - cpu)
            return min(times) / count * 1e6

        def each(items: list[Any], step: Callable[[Any], object]) -> Callable[[], None]:
            def pass_() -> None:
                for item in items:  # one read's results go before the next's
                    step(item)

            return pass_

        buffer = LineBuffer()
        lines = cast(list[list[bytes]], [buffer.feed(read) for read in reads])  # none oversized
        attempt = Attempt(job_id, 1, AttemptState.RUNNING)

        def lifecycle(chunk: list[bytes]) -> None:
            attempt.last_seq = 1  # every pass takes the same seqs again
            messages = decode_all(chunk)
            assert messages is not None and attempt.receive_all(messages, True)

        def core() -> None:
            attempt = ServerAttempt(job_id, token, now=0.0, recorded_seq=1)
            conn = attempt.connect()
            conn.binding, conn.replay = Binding.EXTENDED, True  # as after its hello
            for read in reads:
                attempt.recorded(conn.receive_data(read, 1.0))
            assert attempt.recorded_seq == count + 1, attempt.recorded_seq

        gc.disable()
        try:
            split = best(each(reads, LineBuffer().feed))
            parsed = best(each(lines, lambda chunk: list(map(orjson.loads, chunk))))
            checked = best(each(lines, lambda chunk: schema(list(map(orjson.loads, chunk)))))
            decoded = best(each(lines, decode_all))
            lived = best(each(lines, lifecycle))
            core_alone = best(core)
        finally:
            gc.enable()
        self.split, self.parse = split, parsed
        self.schema = max(0.0, checked - parsed)
        self.messages = max(0.0, decoded - checked)
        self.lifecycle = max(0.0, lived - decoded)
        self.rest = max(0.0, core_alone - split - lived)
        self.core = best(core)  # as the server runs it: Python's default GC thresholds
        self.gc = max(0.0, self.core - core_alone)

    def lines(self, server: Rate) -> list[str]:
        natives = self.parse + self.schema
        return [
            f"      where the server's {server.cpu_us:.2f} us CPU/msg go (this run): the core "
            f"{self.core:.2f} = split {self.split:.2f} + JSON parse {self.parse:.2f} "
            f"+ schema check {self.schema:.2f} + Message objects {self.messages:.2f} "
            f"+ lifecycle {self.lifecycle:.2f} + the rest {self.rest:.2f} "
            f"+ cyclic GC {self.gc:.2f}; beyond the core "
            f"(socket reads, event loop, deliver, store, acks) "
            f"{max(0.0, server.cpu_us - self.core):.2f}",
            f"      what limits it: orjson + jsonschema-rs alone, one line and one message "
            f"each, take {natives:.2f} us/msg, at most {1e6 / natives:,.0f} msg/s on one core "
            f"(the target needs <= {1e6 / TARGET_RATE:.2f} us/msg for everything)",
        ]


async def measure(workers: int, count: int, rounds: int) -> dict[str, Rate]:
    """Each figure ``rounds`` times, in turn, and its best: on a shared machine
    a round that others slowed down says little about either side."""
    best: dict[str, Rate] = {}
    for _ in range(rounds):
        got = {
            "bare": await bare_rate(workers, count),
            "served": await server_rate(workers, count),
            "heard": await server_rate(workers, count, subscriber=True),
        }
        if workers == 1:
            got["deployed"] = await asyncio.to_thread(deployed_rate, count)
            got["watched"] = await asyncio.to_thread(deployed_rate, count, SSE_CLIENTS)
        for name, rate in got.items():
            if name not in best or rate.per_second > best[name].per_second:
                best[name] = rate
    return best


def run(smoke: bool) -> list[str]:
    async def main() -> list[str]:
        lines = [
            "server_ingest: progress messages recorded per second (issue 15); "
            f"the best of {1 if smoke else ROUNDS} rounds of every figure"
        ]
        for workers, count in SIZES[smoke]:
            best = await measure(workers, count, 1 if smoke else ROUNDS)
            bare, served, heard = best["bare"], best["served"], best["heard"]
            lines.append(
                f"  {workers:>3} worker(s) x {count:,}: server {served} "
                f"= {served.per_second / bare.per_second:.0%} of the bare asyncio reader "
                f"({bare}, the limit: load generator + split + orjson)"
            )
            lines.append(_against(served, "with one event subscriber", heard, smoke))
            if workers == 1:
                lines.append(
                    _against(served, "deployed (extjob serve, HTTP/SSE on, no client)",
                             best["deployed"], smoke)
                )  # fmt: skip
                watched = best["watched"]
                clients = f"; the clients took {watched.clients_cpu_us:.2f} us CPU/msg of 2 cores"
                lines.append(
                    _against(served, f"deployed, {SSE_CLIENTS} SSE clients on /api/events",
                             watched, smoke, clients)
                )  # fmt: skip
                lines += CoreParts(count).lines(served)
                if not smoke:
                    rate, share = served.per_second, served.per_second / bare.per_second
                    lines.append(
                        f"      target >= {TARGET_RATE:,} msg/s and >= {TARGET_SHARE:.0%} "
                        f"of the bare reader: "
                        f"{verdict(rate >= TARGET_RATE and share >= TARGET_SHARE)}"
                    )
        return lines

    return run_async(main)


if __name__ == "__main__":
    for line in run("--smoke" in sys.argv):
        print(line)

"""Progress message to SSE client latency, with many SSE clients connected.

``python bench/http_sse_latency.py [--smoke]``, or through ``bench/run.py``.

A real ``extjob serve`` process runs one job whose worker (a v1 load
generator in this file) sends ``progress`` at a steady rate over its socket.
Client processes hold the SSE connections to ``/api/events``. The last
message of each write (the latest progress, which the server emits: progress
read together is one event, SRV-3) carries the worker's ``time.monotonic_ns()``
taken just before the write; a client takes the same clock just after its read (one
system-wide clock, CLOCK_MONOTONIC, so the difference is the end-to-end
latency: socket, server, event bus, SSE encoding, HTTP, client). Clients
only look for the probes (``bytes.find``), so that parsing a million events a
second does not limit what is measured.

The baseline in the same run is one SSE client at the same message rate:
the price of the fan-out is the ratio of the two. The server's CPU over each
measurement is printed in cores (from /proc).
Targets (issues 6 and 15): p99 under 5 ms with 100 clients at 10,000
messages/s, the server under half a core.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _server_common import DeployedServer, process_cpu

TICK_S = 0.001  # the load generator writes what is due once per millisecond
CLIENT_PROCESSES = 4
PROBE = b'"p":'
END = b"event: job.completed"


# -- the load generator (runs as the job's worker) ------------------------------------


def pacer() -> int:
    payload = json.loads(sys.stdin.readline())
    job_id, data = payload["jobId"], payload["data"]
    rate, seconds = data["rate"], data["seconds"]
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(payload["socketPath"])

    def line(kind: str, **fields: object) -> bytes:
        message = {"type": kind, "jobId": job_id, "timestamp": time.time_ns() // 1_000_000}
        return (json.dumps({**message, **fields}, separators=(",", ":")) + "\n").encode()

    sock.sendall(line("started"))
    total = int(rate * seconds)
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        batch = []
        for i in range(sent, due):
            key = "p" if i == due - 1 else "i"
            batch.append(line("progress", percent=100 * i / total, data={key: time.monotonic_ns()}))
        sent = due
        sock.sendall(b"".join(batch))
        time.sleep(max(0.0, start + sent / rate - time.monotonic()))
    elapsed = time.monotonic() - start
    sock.sendall(line("completed", result={"sent": sent, "seconds": round(elapsed, 3)}))
    sock.close()
    return 0


# -- SSE clients (run as separate processes) -----------------------------------------


async def _client(host: str, port: int, token: str, ready: asyncio.Event) -> list[int]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /api/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")  # the response headers
    ready.set()
    latencies = []
    pending = b""
    while True:
        chunk = await reader.read(1 << 20)
        now = time.monotonic_ns()
        if not chunk:
            break
        # Only whole events: a probe split between two reads is read next time.
        data = pending + chunk
        cut = data.rfind(b"\n\n") + 2
        whole, pending = data[:cut], data[cut:]
        at = whole.find(PROBE)
        while at >= 0:
            stop = whole.index(b"}", at)
            latencies.append(now - int(whole[at + len(PROBE) : stop]))
            at = whole.find(PROBE, stop)
        if END in whole:
            break
    writer.close()
    return latencies


async def _clients(url: str, token: str, count: int) -> None:
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    readies = [asyncio.Event() for _ in range(count)]
    tasks = [asyncio.create_task(_client(host, int(port), token, r)) for r in readies]
    await asyncio.gather(*(r.wait() for r in readies))
    print("ready", flush=True)
    results = await asyncio.gather(*tasks)
    print(json.dumps([x for result in results for x in result]), flush=True)


# -- the benchmark ------------------------------------------------------------------------


def _measure(server: DeployedServer, clients: int, rate: int, seconds: float) -> dict[str, float]:
    processes = min(CLIENT_PROCESSES, clients)
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    readers = [
        subprocess.Popen(
            [sys.executable, __file__, "--clients", server.url, server.token, str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in shares
    ]
    try:
        for reader in readers:
            assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        cpu = process_cpu(server.process.pid)
        job_id = server.enqueue("pacer", {"rate": rate, "seconds": seconds})
        latencies: list[int] = []
        for reader in readers:
            out, _ = reader.communicate(timeout=seconds + 60)
            latencies += json.loads(out.splitlines()[-1])
        cpu = process_cpu(server.process.pid) - cpu
    finally:
        for reader in readers:
            reader.kill()
    result = server.request("GET", f"/api/jobs/{job_id}")["result"]
    ms = sorted(x / 1e6 for x in latencies)
    assert ms, "no probe reached a client"
    return {
        "cores": cpu / result["seconds"],  # the window is a little longer: an upper bound
        "rate": result["sent"] / result["seconds"],
        "probes": len(ms),
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
    }


def run(smoke: bool) -> list[str]:
    rate, clients, seconds = (500, 5, 1.0) if smoke else (10_000, 100, 5.0)
    with tempfile.TemporaryDirectory(prefix="xj-bench-") as work:
        server = DeployedServer(Path(work), {"pacer": [sys.executable, __file__, "--pacer"]})
        try:
            one = _measure(server, 1, rate, seconds)
            many = _measure(server, clients, rate, seconds)
        finally:
            server.close()
    lines = [f"http_sse_latency: progress message -> SSE client, {rate:,} messages/s target"]
    for m, count in ((one, 1), (many, clients)):
        lines.append(
            f"  {count:>3} client(s): {m['rate']:,.0f} msg/s sent, {m['probes']} probes, "
            f"p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms, max {m['max']:.1f} ms, "
            f"server {m['cores']:.2f} cores"
        )
    lines.append(f"  fan-out cost: p99 x{many['p99'] / one['p99']:.1f} of one client")
    if not smoke:
        lines.append(
            f"  target p99 < 5 ms with {clients} clients: {'met' if many['p99'] < 5 else 'MISSED'}"
        )
        lines.append(
            f"  target server < 0.5 cores with {clients} clients: "
            + ("met" if many["cores"] < 0.5 else "MISSED")
        )
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pacer"]:
        sys.exit(pacer())
    if sys.argv[1:2] == ["--clients"]:
        asyncio.run(_clients(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        sys.exit(0)
    print("\n".join(run(smoke="--smoke" in sys.argv)))

"""Progress message to SSE client latency, with many SSE clients connected.

``python bench/http_sse_latency.py [--smoke]``, or through ``bench/run.py``.

A real ``extjob serve`` process runs one job whose worker (a v1 load
generator in this file, the pacer) writes what is due once per millisecond:
at 10,000 messages/s, ten ``progress`` lines per write. Client processes
hold the SSE connections to ``/api/events``. The last message of each write
(the latest progress, which the server emits: progress read together is one
event, SRV-3) carries the pacer's ``time.monotonic_ns()`` taken just before
the write; a client takes the same clock just after its read (one
system-wide clock, CLOCK_MONOTONIC, so the difference is the end-to-end
latency: socket, server, event bus, SSE encoding, HTTP, client). A probe
that a later one overtook in the same read is not counted: what a dashboard
sees is the latest progress, and the figure is how old that is when it
arrives. Clients are a bare epoll loop that only looks for the probes
(``bytes.find``), so that reading does not limit what is measured; each
reports the CPU it used, and so does the pacer.

The limit, in the same run: a bare relay, a minimal asyncio process that
reads the same pacer's socket and writes one SSE frame (the last line of
the read, framed once, HTTP chunked like the server) per read to the same
number of clients, in the same client processes. It does what any server
must do for this fan-out and nothing else, so its figure is what this
machine, with these six processes on it, can do at all. The other baseline
is the server with one SSE client: the price of the fan-out is the ratio.
Each measure runs in two turns, interleaved with the others, so that the
machine's other load, which changes by the minute, weighs on all alike.

Beside each figure: the CPU in cores of the process serving the clients
(server or relay), the pacer and each client process (from /proc and the
processes' own clocks), and of the whole machine, other users included
(/proc/stat). A process near one core, or a machine near all of its cores,
is named as what limits the figure. From the server's /metrics, its profile:
the CPU its writes to the streams cost (the rest is reading the worker,
the store and the loop), and how long an event waited in the server from
its publication until it was written to every stream.

What limits it on the 2-core machine this was written on: each write to a
stream is one send on loopback TCP (5-10 us of CPU, most of it the kernel's
and the client's wake-up), so a flush to 100 streams holds the loop ~1 ms
and the last stream waits for the first 99; beside six processes and the
machine's other users, that ms is often spread over several while the
server waits for a core. The server's other work per read (its store
commit hands over to the SQLite thread and back) comes on top.

Targets (issues 6 and 15): p99 under 5 ms with 100 clients at 10,000
messages/s, the server under half a core.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import Request, urlopen

from _server_common import DeployedServer, process_cpu

TICK_S = 0.001  # the pacer writes what is due once per millisecond
CLIENT_PROCESSES = 4
PROBE = b'"p":'
END = b"event: job.completed"
SATURATED = 0.9  # of a core: a single-threaded process this busy is what limits the figure
TARGET_P99_MS = 5.0
TARGET_CORES = 0.5
ROUNDS = 2  # each measure in this many turns, interleaved with the others


# -- the load generator (runs as the job's worker, or the relay's) ---------------------


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
    cpu = time.process_time()
    start = time.monotonic()
    sent = ticks = writes = 0
    while sent < total:
        ticks += 1
        due = min(total, int(ticks * TICK_S * rate))
        if due > sent:
            batch = []
            for i in range(sent, due):
                key = "p" if i == due - 1 else "i"
                batch.append(
                    line("progress", percent=100 * i / total, data={key: time.monotonic_ns()})
                )
            sent = due
            sock.sendall(b"".join(batch))
            writes += 1
        time.sleep(max(0.0, start + ticks * TICK_S - time.monotonic()))
    elapsed = time.monotonic() - start
    result = {
        "sent": sent,
        "writes": writes,
        "seconds": round(elapsed, 4),
        "cpu": round(time.process_time() - cpu, 4),
    }
    sock.sendall(line("completed", result=result))
    sock.close()
    return 0


# -- the bare relay: the limit ------------------------------------------------------------


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(b": relay\n\n")
)


async def _relay(socket_path: str) -> None:
    loop = asyncio.get_running_loop()
    streams: list[asyncio.Transport] = []
    done: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport, self.request = transport, b""

        def data_received(self, data: bytes) -> None:
            self.request += data
            if b"\r\n\r\n" in self.request and self.transport not in streams:
                self.transport.write(_HEADERS)
                streams.append(self.transport)

    class Worker(asyncio.Protocol):
        pending = b""
        number = 0
        last = b""

        def data_received(self, data: bytes) -> None:
            data = self.pending + data
            cut = data.rfind(b"\n") + 1
            if not cut:
                self.pending = data
                return
            self.pending = data[cut:]
            self.last = data[data.rfind(b"\n", 0, cut - 1) + 1 : cut - 1]
            self.number += 1
            frame = _chunk(b"id: %d\nevent: progress\ndata: %s\n\n" % (self.number, self.last))
            for transport in streams:
                transport.write(frame)

        def connection_lost(self, exc: Exception | None) -> None:
            end = _chunk(END + b"\ndata: {}\n\n")
            for transport in streams:
                transport.write(end)
                transport.close()
            done.set_result(self.last)

    http = await loop.create_server(Client, "127.0.0.1", 0)
    worker = await loop.create_unix_server(Worker, socket_path)
    print(f"http://127.0.0.1:{http.sockets[0].getsockname()[1]}", flush=True)
    completed = json.loads(await done)
    print(json.dumps(completed["result"]), flush=True)
    worker.close()
    http.close()


# -- SSE clients (run as separate processes) -----------------------------------------


def _connect(host: str, port: int, token: str) -> socket.socket:
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(
        f"GET /api/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:  # the response headers
        more = sock.recv(4096)
        if not more:
            raise ConnectionError("the SSE server closed before its headers")
        head += more
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    sock.setblocking(False)
    return sock


def clients(url: str, token: str, count: int) -> None:
    """Hold ``count`` SSE streams in one epoll loop; print the probes' latencies."""
    host, port = url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    socks = {}
    for _ in range(count):
        sock = _connect(host, int(port), token)
        socks[sock.fileno()] = sock
    pending = dict.fromkeys(socks, b"")
    poll = select.epoll()
    for fd in socks:
        poll.register(fd, select.EPOLLIN)
    print("ready", flush=True)
    latencies: list[int] = []
    cpu = time.process_time()
    started = time.monotonic()
    while pending:
        for fd, _ in poll.poll():
            if fd not in pending:
                continue
            chunk = socks[fd].recv(1 << 20)
            now = time.monotonic_ns()
            # Only whole events: a probe split between two reads is read next time.
            data = pending[fd] + chunk
            cut = data.rfind(b"\n\n") + 2
            whole, pending[fd] = data[:cut], data[cut:]
            at = whole.rfind(PROBE)  # the newest: an older one in the same read was overtaken
            if at >= 0:
                stop = whole.index(b"}", at)
                latencies.append(now - int(whole[at + len(PROBE) : stop]))
            if not chunk or END in whole:
                poll.unregister(fd)
                del pending[fd]
    report = {"cpu": time.process_time() - cpu, "seconds": time.monotonic() - started}
    print(json.dumps({**report, "latencies": latencies}), flush=True)


# -- the benchmark ------------------------------------------------------------------------


def _machine_busy() -> tuple[float, float]:
    """Seconds of CPU the whole machine has been busy, and the wall clock."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in fields]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # all but idle and iowait (steal included)
    return busy / os.sysconf("SC_CLK_TCK"), time.monotonic()


def _start_clients(url: str, token: str, count: int) -> list[subprocess.Popen[str]]:
    processes = min(CLIENT_PROCESSES, count)
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    readers = [
        subprocess.Popen(
            [sys.executable, __file__, "--clients", url, token, str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in shares
    ]
    for reader in readers:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    return readers


def _gather(readers: list[subprocess.Popen[str]], seconds: float) -> list[dict]:
    try:
        return [
            json.loads(r.communicate(timeout=seconds + 60)[0].splitlines()[-1]) for r in readers
        ]
    finally:
        for reader in readers:
            reader.kill()


@dataclass
class Sample:
    """One measured round: CPU seconds, the pacer's result, the clients' reports."""

    serving_cpu: float  # the server or the relay
    result: dict  # the pacer's: sent, writes, seconds, cpu
    reports: list[dict]  # per client process: cpu, seconds, latencies
    machine: tuple[float, float]  # busy CPU seconds of the whole machine, over wall seconds
    hub: dict[str, float] | None = None  # the server's SSE counters over the round


def _figures(samples: list[Sample], clients: int) -> dict:
    """The rounds' figures together: latencies pooled, CPU over the summed windows."""
    ms = sorted(x / 1e6 for s in samples for report in s.reports for x in report["latencies"])
    assert ms, "no probe reached a client"
    seconds = sum(s.result["seconds"] for s in samples)
    processes = zip(*(s.reports for s in samples), strict=True)  # each client process's rounds
    return {
        "cores": sum(s.serving_cpu for s in samples) / seconds,  # an upper bound: the
        "rate": sum(s.result["sent"] for s in samples) / seconds,  # window is a bit longer
        "delivered": len(ms) / (sum(s.result["writes"] for s in samples) * clients),
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max": ms[-1],
        "pacer": sum(s.result["cpu"] for s in samples) / seconds,
        "clients": [sum(r["cpu"] for r in p) / sum(r["seconds"] for r in p) for p in processes],
        "machine": sum(s.machine[0] for s in samples) / sum(s.machine[1] for s in samples),
        "hub": _sum_counters([s.hub for s in samples if s.hub is not None], len(samples)),
        "seconds": seconds,
    }


def _sum_counters(rounds: list[dict[str, float]], expected: int) -> dict[str, float] | None:
    """The hub's counters over all rounds (None for the relay, which has none)."""
    if len(rounds) < expected:
        return None
    return {name: sum(counters[name] for counters in rounds) for name in rounds[0]}


_HUB_COUNTERS = {
    "extjob_sse_events_total": "events",
    "extjob_sse_writes_total": "writes",
    "extjob_sse_write_cpu_seconds_total": "write_cpu",
}


DELAY = "extjob_sse_delay_seconds"


def _hub_counters(server: DeployedServer) -> dict[str, float]:
    """The hub's counters, and its delay histogram as ``le <bound>`` counts."""
    request = Request(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.token}"})
    with urlopen(request, timeout=30) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in _HUB_COUNTERS:
            found[_HUB_COUNTERS[name]] = float(value)
        elif name.startswith(f'{DELAY}_bucket{{le="'):
            found["le " + name.split('"')[1]] = float(value)
        elif name in (f"{DELAY}_sum", f"{DELAY}_count"):
            found[name.removeprefix(f"{DELAY}_")] = float(value)
    return found


def _bucket_of(hub: dict[str, float], share: float) -> str:
    """The histogram's bound under which ``share`` of the flushes' delays fell."""
    for key in sorted((k for k in hub if k.startswith("le ")), key=lambda k: float(k[3:])):
        if hub[key] >= share * hub["count"]:
            return f"<= {float(key[3:]) * 1000:g} ms" if key != "le +Inf" else "> 1 s"
    return "?"


def _measure_server(server: DeployedServer, clients: int, rate: int, seconds: float) -> Sample:
    readers = _start_clients(server.url, server.token, clients)
    hub = _hub_counters(server)
    cpu = process_cpu(server.process.pid)
    machine = _machine_busy()
    job_id = server.enqueue("pacer", {"rate": rate, "seconds": seconds})
    reports = _gather(readers, seconds)
    busy = _busy_since(machine)
    cpu = process_cpu(server.process.pid) - cpu
    hub = {name: value - hub[name] for name, value in _hub_counters(server).items()}
    result = server.request("GET", f"/api/jobs/{job_id}")["result"]
    return Sample(cpu, result, reports, busy, hub)


def _measure_relay(socket_path: str, clients: int, rate: int, seconds: float) -> Sample:
    relay = subprocess.Popen(
        [sys.executable, __file__, "--relay", socket_path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert relay.stdout is not None
        url = relay.stdout.readline().strip()
        readers = _start_clients(url, "-", clients)
        cpu = process_cpu(relay.pid)
        machine = _machine_busy()
        payload = {"jobId": "relay", "data": {"rate": rate, "seconds": seconds}}
        pacer = subprocess.Popen([sys.executable, __file__, "--pacer"], stdin=subprocess.PIPE)
        assert pacer.stdin is not None
        pacer.stdin.write(json.dumps({**payload, "socketPath": socket_path}).encode() + b"\n")
        pacer.stdin.close()
        reports = _gather(readers, seconds)
        busy = _busy_since(machine)
        cpu = process_cpu(relay.pid) - cpu
        result = json.loads(relay.stdout.readline())
        pacer.wait(timeout=30)
    finally:
        relay.kill()
        relay.wait()
    return Sample(cpu, result, reports, busy)


def _busy_since(start: tuple[float, float]) -> tuple[float, float]:
    busy, at = _machine_busy()
    return busy - start[0], at - start[1]


def _describe(label: str, m: dict) -> list[str]:
    client_cores = m["clients"]
    line = (
        f"  {label}: {m['rate']:,.0f} msg/s sent, {m['delivered']:.0%} of writes seen, "
        f"p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms, max {m['max']:.1f} ms, "
        f"{m['cores']:.2f} cores"
    )
    ours = m["cores"] + m["pacer"] + sum(client_cores)
    cpu = (
        f"      cpu (cores): pacer {m['pacer']:.2f}, client processes "
        + "/".join(f"{c:.2f}" for c in client_cores)
        + f"; machine {m['machine']:.2f} of {os.cpu_count()} busy"
        + f" (this benchmark {ours:.2f}, others {max(0.0, m['machine'] - ours):.2f})"
    )
    limits = [
        name
        for name, busy in (
            ("the serving process", m["cores"]),
            ("the pacer", m["pacer"]),
            ("a client process", max(client_cores)),
        )
        if busy >= SATURATED
    ]
    if m["machine"] >= SATURATED * (os.cpu_count() or 1):
        limits.append("the machine (every core busy: latency includes waiting for one)")
    verdict = "      limited by: " + (", ".join(limits) or "no process is CPU-bound")
    hub = m["hub"]
    if hub is None:
        return [line, cpu, verdict]
    seconds = m["seconds"]
    per_write = hub["write_cpu"] / hub["writes"] * 1e6 if hub["writes"] else 0.0
    fan_out = hub["write_cpu"] / seconds
    split = (
        f"      server's CPU: writing to the streams {fan_out:.2f} cores "
        f"({hub['writes'] / seconds:,.0f} writes/s, {per_write:.1f} us each, "
        f"{hub['events'] / seconds:,.0f} events/s); "
        f"the rest (reading, store, loop) {m['cores'] - fan_out:.2f}"
    )
    mean = hub["sum"] / hub["count"] * 1000 if hub["count"] else 0.0
    delay = (
        f"      in the server, publication -> written to every stream: mean {mean:.2f} ms, "
        f"p50 {_bucket_of(hub, 0.5)}, p99 {_bucket_of(hub, 0.99)} "
        f"(of {hub['count'] / seconds:,.0f} flushes/s; the rest of the latency is before "
        "the server publishes and after it writes)"
    )
    return [line, cpu, split, delay, verdict]


def run(smoke: bool) -> list[str]:
    rate, clients, seconds = (500, 5, 1.0) if smoke else (10_000, 100, 5.0)
    relay: list[Sample] = []
    many: list[Sample] = []
    one: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="xj-bench-") as work:
        server = DeployedServer(Path(work), {"pacer": [sys.executable, __file__, "--pacer"]})
        try:
            # The relay and the server take turns: the machine's other load
            # changes by the minute, and both see the same share of it.
            for n in range(ROUNDS):
                share = seconds / ROUNDS
                relay.append(_measure_relay(f"{work}/relay-{n}.sock", clients, rate, share))
                many.append(_measure_server(server, clients, rate, share))
                one.append(_measure_server(server, 1, rate, share))
        finally:
            server.close()
    relay_f, many_f, one_f = (
        _figures(x, count) for x, count in ((relay, clients), (many, clients), (one, 1))
    )
    lines = [
        f"http_sse_latency: progress message -> SSE client, {rate:,} messages/s, "
        f"one write per {TICK_S * 1000:g} ms"
    ]
    for name, count, m in (
        ("bare relay (the limit)", clients, relay_f),
        ("extjob serve", clients, many_f),
        ("extjob serve", 1, one_f),
    ):
        lines += _describe(f"{name:<22} {count:>3} client{'s' if count > 1 else ' '}", m)
    lines.append(
        f"  fan-out cost: p99 x{many_f['p99'] / one_f['p99']:.1f} of one client; "
        f"the server's p99 is x{many_f['p99'] / relay_f['p99']:.1f} the bare relay's, "
        f"its CPU x{many_f['cores'] / relay_f['cores']:.1f}"
    )
    if not smoke:
        lines.append(
            f"  target p99 < {TARGET_P99_MS:g} ms with {clients} clients: "
            + ("met" if many_f["p99"] < TARGET_P99_MS else "MISSED")
            + f" (the bare relay: {'met' if relay_f['p99'] < TARGET_P99_MS else 'MISSED'})"
        )
        lines.append(
            f"  target server < {TARGET_CORES:g} cores with {clients} clients: "
            + ("met" if many_f["cores"] < TARGET_CORES else "MISSED")
        )
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pacer"]:
        sys.exit(pacer())
    if sys.argv[1:2] == ["--relay"]:
        asyncio.run(_relay(sys.argv[2]))
        sys.exit(0)
    if sys.argv[1:2] == ["--clients"]:
        clients(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        sys.exit(0)
    print("\n".join(run(smoke="--smoke" in sys.argv)))

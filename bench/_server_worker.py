"""Load generator for the server benchmarks: a worker that sends as fast as it can.

Payload ``data``:
  {"mode": "blast", "count": N, "go": PATH}  connect, encode N progress messages,
      send started (and create the file ``ready`` names, if any), wait until
      PATH exists, then send the N messages and completed in large writes;
  {"mode": "paced", "rate": R, "seconds": S}  send R progress messages per second
      for S seconds, each carrying its send time (CLOCK_MONOTONIC, system-wide)
      in data.t, in bursts of R/1000 every millisecond.
With a ``token`` in the payload it speaks the extended protocol (hello, seq,
waits for the ack of its terminal message); without one it only writes lines
(for the bare-reader baseline). Pre-encodes everything, so the sender costs
as little as possible during the measured window.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def blast_lines(job_id: str, count: int, now: int, first_seq: int) -> list[bytes]:
    """The progress lines of the blast mode, seq from ``first_seq`` on."""
    return [
        encode(
            {
                "type": "progress",
                "jobId": job_id,
                "timestamp": now,
                "seq": first_seq + i,
                "percent": i * 100 // count,
            }
        )
        for i in range(count)
    ]


def main() -> None:
    payload = json.loads(sys.stdin.readline())
    job_id, data = payload["jobId"], payload["data"]
    extended = "token" in payload
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(payload["socketPath"])
    reader = sock.makefile("rb")
    if extended:
        sock.sendall(
            encode(
                {
                    "type": "hello",
                    "jobId": job_id,
                    "timestamp": 1,
                    "token": payload["token"],
                    "protocolVersion": 1,
                    "features": ["auth", "replay"],
                    "pid": os.getpid(),
                }
            )
        )
        json.loads(reader.readline())  # welcome
    now = int(time.time() * 1000)
    seq = 1
    started = encode({"type": "started", "jobId": job_id, "timestamp": now, "seq": seq})
    if data["mode"] == "blast":
        # Encode everything before saying started: the benchmarks start their
        # clock when every worker has started, and the worker's own JSON
        # encoding (0.3 s for 100k lines) must not be inside the window.
        blob = b"".join(blast_lines(job_id, data["count"], now, seq + 1))
        seq += data["count"]
        sock.sendall(started)
        if "ready" in data:  # a file for a benchmark that cannot see the server's state
            open(data["ready"], "w").close()
        while not os.path.exists(data["go"]):
            time.sleep(0.002)
        view = memoryview(blob)
        for start in range(0, len(blob), 1 << 18):
            sock.sendall(view[start : start + (1 << 18)])
    else:
        sock.sendall(started)
        burst = max(1, data["rate"] // 1000)
        begin = time.monotonic()
        for tick in range(int(data["seconds"] * 1000)):
            delay = begin + tick / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t = time.monotonic_ns()
            chunk = []
            for _ in range(burst):
                seq += 1
                chunk.append(
                    encode(
                        {
                            "type": "progress",
                            "jobId": job_id,
                            "timestamp": now,
                            "seq": seq,
                            "percent": 50,
                            "data": {"t": t},
                        }
                    )
                )
            sock.sendall(b"".join(chunk))
    seq += 1
    sock.sendall(encode({"type": "completed", "jobId": job_id, "timestamp": now, "seq": seq}))
    if extended:
        for line in reader:  # REPLAY-3: wait until the terminal message is recorded
            reply = json.loads(line)
            if reply.get("type") == "ack" and reply["seq"] >= seq:
                break
    sock.close()


if __name__ == "__main__":
    main()

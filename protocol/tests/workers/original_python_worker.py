"""A v1 worker that behaves like the original Python wrapper (ORIGINAL-BEHAVIOUR.md).

It connects, starts its heartbeat thread, which sends its first heartbeat at
once, before ``started``; runs the job (``steps`` progress messages,
``sleep_ms`` apart), sends ``completed``, and then joins its sleeping
heartbeat thread, so it lives up to one interval after ``completed``. On a
broken connection it retries every 2 s, 30 times, and sends ``started``
again once reconnected; what it sends while disconnected is dropped.
Its data: ``steps`` (3), ``sleep_ms`` (0), ``heartbeat_ms`` (5000).
"""

import json
import socket
import sys
import threading
import time

payload = json.loads(sys.stdin.readline())
data = payload.get("data") or {}
job_id = payload["jobId"]
lock = threading.Lock()
done = threading.Event()
first_beat = threading.Event()
conn = None


def connect():
    global conn
    for _ in range(30):
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(payload["socketPath"])
            conn = sock
            return True
        except OSError:
            time.sleep(2)
    return False


def send(kind, **fields):
    fields.update(type=kind, jobId=job_id, timestamp=int(time.time() * 1000))
    line = json.dumps(fields).encode() + b"\n"
    with lock:
        try:
            conn.sendall(line)
        except OSError:
            if kind != "started" and connect():  # reconnect, then started again
                conn.sendall(
                    json.dumps(
                        {"type": "started", "jobId": job_id, "timestamp": int(time.time() * 1000)}
                    ).encode()
                    + b"\n"
                )


def heartbeats():
    while not done.is_set():
        send("heartbeat")
        first_beat.set()
        done.wait(data.get("heartbeat_ms", 5000) / 1000)


connect()
beater = threading.Thread(target=heartbeats)
beater.start()
first_beat.wait()  # the thread's first heartbeat goes out before started, as in the original
send("started")
steps = data.get("steps", 3)
for i in range(1, steps + 1):
    time.sleep(data.get("sleep_ms", 0) / 1000)
    send("progress", percent=100 * i / steps, message=f"step {i}")
send("completed", result={"steps": steps})
done.set()
beater.join()
conn.close()

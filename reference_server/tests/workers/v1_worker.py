"""A minimal v1 worker (no hello, no seq), as the original wrappers behave.

Its ``data`` chooses what it does, in this order:
  ignore_term: true      ignore SIGTERM (to test SIGKILL after the grace)
  child: true            start a grandchild `sleep 60` and print its pid on stdout
  env: [names]           print NAME=value for each (unset: NAME unset) on stdout
  silent_ms: N           sleep N ms before connecting (START-1)
  steps: N               N progress and N log messages
  connect_after: path    wait until the file exists before connecting
  print_after: path      wait until the file exists before printing stdout, stderr
  stdout, stderr: text   one line on each
  heartbeat_ms: N        heartbeat every N ms while sleeping
  sleep_ms: N            sleep N ms
  terminal: completed | failed | none
  exit: code, or "kill" to die by SIGKILL
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

payload = json.loads(sys.stdin.readline())
data = payload.get("data") or {}
job_id = payload["jobId"]
if data.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if data.get("child"):
    child = subprocess.Popen(["sleep", "60"])
    print(f"child={child.pid}", flush=True)
for name in data.get("env", []):
    print(f"{name}={os.environ[name]}" if name in os.environ else f"{name} unset", flush=True)
time.sleep(data.get("silent_ms", 0) / 1000)


def wait_for(path):
    while path and not os.path.exists(path):
        time.sleep(0.01)


wait_for(data.get("connect_after"))
sock = socket.socket(socket.AF_UNIX)
sock.connect(payload["socketPath"])


def send(kind, **fields):
    fields.update(type=kind, jobId=job_id, timestamp=int(time.time() * 1000))
    # The server went away: a v1 worker just carries on (RECONNECT-2).
    with contextlib.suppress(OSError):
        sock.sendall(json.dumps(fields).encode() + b"\n")


send("started")
for i in range(1, data.get("steps", 0) + 1):
    send("progress", percent=100 * i / data["steps"], message=f"step {i}")
    send("log", level="info", message=f"line {i}", data={"i": i})
wait_for(data.get("print_after"))
if data.get("stdout"):
    print(data["stdout"], flush=True)
if data.get("stderr"):
    print(data["stderr"], file=sys.stderr, flush=True)
deadline = time.monotonic() + data.get("sleep_ms", 0) / 1000
while time.monotonic() < deadline:
    beat = data.get("heartbeat_ms")
    time.sleep(min(deadline - time.monotonic(), beat / 1000 if beat else 3600))
    if beat:
        send("heartbeat")
terminal = data.get("terminal", "completed")
if terminal == "completed":
    send("completed", result={"pid": os.getpid()})
elif terminal == "failed":
    send("failed", error="it broke", stack="here")
sock.close()
if data.get("exit") == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(data.get("exit", 0))

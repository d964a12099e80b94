"""STALE-1, STALE-2: a server that was itself not running does not blame its workers.

Ctrl-Z then ``fg``, a VM pause, a long GC: the worker goes on heartbeating
into its socket while the server is stopped. When the server runs again its
overdue deadlines must not kill the worker ("no message for 2630 ms") before
reading what waits on the socket.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from http_helpers import TOKEN, start_server, stop_server, wait_for

WORKER = Path(__file__).resolve().parents[1] / "workers" / "v1_worker.py"
CONFIG = f"""
database = "extjob.db"
spool_dir = "spool"
socket_dir = {{socket_dir}}

[http]
port = 0
token = "{TOKEN}"

[jobs.beating]
command = {json.dumps(sys.executable)}
args = [{json.dumps(str(WORKER))}]
heartbeat_timeout_ms = 1000
"""


def test_stale_2_a_server_stopped_for_2_5_s_does_not_kill_a_healthy_worker(tmp_path: Path):
    sockets = tmp_path / "s"
    (tmp_path / "extjob.toml").write_text(CONFIG.format(socket_dir=json.dumps(str(sockets))))
    server = start_server(tmp_path)
    try:
        job = server.enqueue("beating", {"sleep_ms": 5000, "heartbeat_ms": 200})
        server.wait_for_status(job["id"], "running")
        time.sleep(0.5)  # a few heartbeats in: the worker is known to be alive
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(2.5)  # 2.5 x the heartbeat timeout, while the worker beats on
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        done = wait_for(
            lambda: (j := server.job(job["id"]))["status"] in ("completed", "failed") and j
        )
        assert (done["status"], done.get("error")) == ("completed", None)
        metrics = server.call("GET", "/metrics").body
        assert "extjob_stale_count_total 0" in metrics
        assert "extjob_killed_count_total 0" in metrics
    finally:
        stop_server(server)

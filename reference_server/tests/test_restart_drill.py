"""The restart drill: 50 jobs streaming logs, the server killed twice at random
moments, restarted each time; every job completes and every log line is there
exactly once, in order. Once with SIGKILL (a crash), once with SIGTERM.

The server is a real subprocess (``python -m extjob.server``); the test
enqueues through the store, as a second process sharing the database would.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_testlib import PYTHON, REPO, SyncStore

JOBS = 50
LINES = 40
SEED = int(os.environ.get("EXTJOB_DRILL_SEED", "20261125"))


def write_config(
    root: Path,
    go_fixture: list[str],
    rust_fixture: list[str],
    typescript_fixture: list[str],
    bun_fixture: list[str],
) -> Path:
    python_fixture = REPO / "wrappers" / "python" / "fixture_worker.py"
    config = root / "extjob.toml"
    config.write_text(
        f"""
database = "jobs.db"
socket_dir = "s"
spool_dir = "spool"
concurrency = {JOBS}
poll_interval_ms = 100

[jobs.py]
command = "{PYTHON}"
args = ["{python_fixture}"]
heartbeat_timeout_ms = 10000

[jobs.go]
command = "{go_fixture[0]}"
heartbeat_timeout_ms = 10000

[jobs.rust]
command = "{rust_fixture[0]}"
heartbeat_timeout_ms = 10000

[jobs.ts]
command = "{typescript_fixture[0]}"
args = ["{typescript_fixture[1]}"]
heartbeat_timeout_ms = 10000

[jobs.bun]
command = "{bun_fixture[0]}"
args = ["{bun_fixture[1]}"]
heartbeat_timeout_ms = 10000
"""
    )
    return config


def start_server(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a server subprocess and wait until it has recovered and serves."""
    starts = _count_starts(log)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "extjob.server", str(config)], stdout=out, stderr=out, env=env
        )
    wait_until(
        lambda: _count_starts(log) > starts or proc.poll() is not None, 30, "the server to start"
    )
    assert proc.poll() is None, log.read_text()[-3000:]
    return proc


def _count_starts(log: Path) -> int:
    return log.read_text().count("extjob server started") if log.exists() else 0


def enqueue(store: SyncStore, name: str, data: object, index: int) -> str:
    return store.enqueue(f"j_drill{index:04d}", name, data)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "term"])
def test_replay_5_restart_drill_every_log_line_exactly_once(
    short_tmp, go_fixture, rust_fixture, typescript_fixture, bun_fixture, stop_signal
):
    rng = random.Random(SEED + stop_signal)
    config = write_config(short_tmp, go_fixture, rust_fixture, typescript_fixture, bun_fixture)
    server_log = short_tmp / "server.log"
    server = start_server(config, server_log)
    store = SyncStore(str(short_tmp / "jobs.db"))
    servers = [server]
    try:
        data = {"scenario": "logs", "count": LINES, "intervalMs": 40}
        kinds = ("py", "go", "rust", "ts", "bun")
        ids = [enqueue(store, kinds[i % len(kinds)], data, i) for i in range(JOBS)]
        for round_ in range(2):
            # Kill while jobs are mid-stream: wait until logs flow, then a random delay.
            flowing = (round_ + 1) * JOBS
            wait_until(lambda: _logged(store, ids) > flowing, 60, "logs to flow")  # noqa: B023
            time.sleep(rng.uniform(0.05, 0.6))
            server.send_signal(stop_signal)
            assert server.wait(timeout=20) == (
                0 if stop_signal == signal.SIGTERM else -signal.SIGKILL
            )
            server = start_server(config, server_log)
            servers.append(server)
        wait_until(lambda: _finished(store, ids), 120, "every job to finish")
        for job_id in ids:
            job = store.get(job_id)
            assert job is not None
            assert (job.status, job.result, job.error) == ("completed", {"count": LINES}, None), (
                job_id
            )
            worker_lines = [
                (e.message, e.data) for e in store.logs(job_id, 0, 10_000) if e.source == "worker"
            ]
            assert worker_lines == [(f"line {i}", {"i": i}) for i in range(1, LINES + 1)], job_id
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    except BaseException:
        sys.stderr.write(server_log.read_text()[-5000:])
        raise
    finally:
        for proc in servers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        store.close()


def _logged(store: SyncStore, ids: list[str]) -> int:
    return sum(len(store.logs(job_id, 0, 10_000)) for job_id in ids)


def _finished(store: SyncStore, ids: list[str]) -> bool:
    return all(store.get(job_id).status in ("completed", "failed", "cancelled") for job_id in ids)

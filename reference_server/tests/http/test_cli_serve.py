"""``extjob serve``: refuses to run without a token; ``--drain`` waits for running jobs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from http_helpers import EXTJOB, WAIT, start_server, stop_server

DRAIN_TIMEOUT = 10.0


def test_serve_without_a_token_exits_2_and_says_how_to_set_one(tmp_path: Path) -> None:
    config = tmp_path / "extjob.toml"
    config.write_text('database = "db.sqlite"\n[http]\nport = 0\n')
    run = subprocess.run(
        [*EXTJOB, "serve", "--config", str(config)], capture_output=True, text=True,
        timeout=WAIT, env={**os.environ, "EXTJOB_TOKEN": ""}, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "no API token: set [http] token in the config or the EXTJOB_TOKEN" in run.stderr


def test_drain_waits_for_running_jobs_before_stopping(tmp_path: Path) -> None:
    server = start_server(tmp_path, ("--drain",))
    job = server.enqueue("thumbnails", {"steps": 10, "delayMs": 100})
    server.wait_for_status(job["id"], "running")
    server.process.terminate()
    try:
        assert server.process.wait(timeout=DRAIN_TIMEOUT) == 0  # the job takes about 1 s
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    again = start_server(tmp_path)  # same config and database, no drain
    try:
        assert again.job(job["id"])["status"] == "completed"
        assert again.job(job["id"])["result"] == {"thumbnails": 10}
    finally:
        stop_server(again)

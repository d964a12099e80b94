"""``extjob demo``: every language, one server restart, every job completes."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from http_helpers import EXTJOB, REPO

NEEDED = ("go", "bash", "jq", "socat")


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in NEEDED),
    reason=f"the demo's three example jobs need {', '.join(NEEDED)}",
)
def test_the_demo_jobs_survive_a_server_restart_and_complete(tmp_path: object) -> None:
    run = subprocess.run(
        [*EXTJOB, "demo", "--exit-when-done", "--steps", "8", "--delay-ms", "150", "--port", "0",
         "--dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "dashboard: http://127.0.0.1:" in out and "/#token=" in out
    assert "stopping the server: the workers keep running" in out
    assert "server back after" in out
    summary = out.split("server back after")[1]
    for line in ('thumbnails  completed {"thumbnails": 8}', 'backup      completed {"archives": 8}',
                 'checksum    completed {"files": 8}'):  # fmt: skip
        assert line in summary
    if shutil.which("cargo") is not None:
        assert 'wordcount   completed {"chunks": 8, "words": 8252}' in summary
    if shutil.which("node") is not None:
        assert 'transcode   completed {"segment": 8, "frames": 1920}' in summary

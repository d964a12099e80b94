"""The README's first command, as a newcomer runs it on a fresh machine.

A fresh Debian has bash and python3 but neither socat nor jq: the command
runs in a new virtual environment with both hidden from PATH, and every
example job whose toolchain is here (bash's included) must complete.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from shellpeer import REPO
from without_tools import path_without

from extjob.client.demo import EXAMPLES

HIDDEN = ("socat", "jq")


def readme_first_command() -> str:
    """The line of the README's first sh block that runs the demo."""
    block = (REPO / "README.md").read_text().split("```sh\n", 1)[1].split("```", 1)[0]
    line = next(line for line in block.splitlines() if "extjob demo" in line)
    return line.split("#", 1)[0].strip()


@pytest.mark.slow  # a pip install of the project and its dependencies
def test_readme_first_command_runs_every_job_in_a_clean_venv_without_socat_and_jq(
    tmp_path: Path,
) -> None:
    command = readme_first_command()
    assert command.startswith("python3 -m pip install . && extjob demo"), command
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (tmp_path / "bin").mkdir()
    path = f"{venv / 'bin'}:{path_without(HIDDEN, tmp_path / 'bin')}"
    assert all(shutil.which(tool, path=path) is None for tool in HIDDEN)
    # The demo as the README runs it, made short, ending by itself.
    command = command.replace(
        "extjob demo",
        f"extjob demo --exit-when-done --steps 4 --delay-ms 150 --port 0 --dir {tmp_path / 'demo'}",
    )
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    run = subprocess.run(
        ["bash", "-c", command], cwd=REPO, env={**env, "PATH": path},
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, out[-4000:] + run.stderr[-4000:]
    assert "server back after" in out  # the restart happened
    summary = out.rsplit("server back after", 1)[1]
    for example in EXAMPLES:
        skipped = re.search(f"skipped the {example.language} job: (.*) not installed", out)
        if skipped is None:
            assert re.search(rf"^{example.name} +completed ", summary, re.M), (example, out)
            continue
        # Skipped only when its tools are really missing here; never bash.
        assert example.language not in ("Python", "bash"), out
        for need in example.needs:
            options = [choice.split() for choice in need.split("|")]
            assert not any(all(shutil.which(t, path=path) for t in tools) for tools in options)

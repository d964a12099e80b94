"""The Rust fixture worker, built once for these tests (into CARGO_TARGET_DIR if set)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CRATE = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def fixture_binary() -> str:
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    subprocess.run(
        ["cargo", "build", "--quiet", "--locked", "--bin", "extjob-fixture"], cwd=CRATE, check=True
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR") or CRATE / "target")
    return str(target / "debug" / "extjob-fixture")

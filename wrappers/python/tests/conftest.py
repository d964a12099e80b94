"""Fixtures for the Python wrapper's tests; the helpers live in pyworker_testlib."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pyworker_testlib import Peer, Worker


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory: Unix socket paths must stay under ~100 bytes."""
    with tempfile.TemporaryDirectory(prefix="xjw") as name:
        yield Path(name)


@pytest.fixture
def peer(short_tmp: Path) -> Iterator[Peer]:
    p = Peer(short_tmp)
    yield p
    p.close()


@pytest.fixture
def ext_peer(short_tmp: Path) -> Iterator[Peer]:
    p = Peer(short_tmp, extended=True)
    yield p
    p.close()


@pytest.fixture
def workers() -> Iterator[Callable[..., Worker]]:
    """Start workers; any still running at the end of the test is killed."""
    started: list[Worker] = []

    def start(payload: Any, script: str | None = None, env: dict[str, str] | None = None) -> Worker:
        worker = Worker(payload, script, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()

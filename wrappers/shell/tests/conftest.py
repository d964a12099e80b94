"""Fixtures for the bash wrapper's tests: a real socket peer, bash workers."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from extjob.conformance.ports import relistenable_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shellpeer import WRAPPER, Peer, Worker


@pytest.fixture(params=["unix", "tcp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_peer(tmp_path: Path) -> Iterator[Callable[..., Peer]]:
    peers: list[Peer] = []

    def make(transport: str = "unix", **kwargs: Any) -> Peer:
        address = (
            str(tmp_path / "job.sock")
            if transport == "unix"
            else f"tcp://127.0.0.1:{relistenable_port()}"
        )
        peer = Peer(address, **kwargs)
        peers.append(peer)
        return peer

    yield make
    for peer in peers:
        peer.stop()


@pytest.fixture
def run_worker() -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def run(script: str | Path, stdin: bytes | dict[str, Any], **kwargs: Any) -> Worker:
        # EXTJOB_SH_CONNECTOR=socat runs the suite on the connector of a
        # machine without python3 (the Worker passes no EXTJOB_* on its own).
        if "EXTJOB_SH_CONNECTOR" in os.environ:
            kwargs["env"] = {"EXTJOB_SH_CONNECTOR": os.environ["EXTJOB_SH_CONNECTOR"]} | (
                kwargs.get("env") or {}
            )
        worker = Worker(script, stdin, **kwargs)
        workers.append(worker)
        return worker

    yield run
    for worker in workers:
        worker.kill()  # the whole group: no process outlives its test


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], Path]:
    """Writes a job script that sources the wrapper."""

    def write(body: str) -> Path:
        path = tmp_path / "job.sh"
        path.write_text(f'source "{WRAPPER}"\n{body}\n')
        return path

    return write

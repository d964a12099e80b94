"""REPLAY-6: the outbox is bounded; progress coalesces and old logs go first, never the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyworker_testlib import DEADLINE, Peer, ext_payload

from extjob_worker import Job, JobFinishedError, parse_payload


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def job_factory(ext_peer: Peer, short_tmp: Path) -> Iterator[Callable[[int], Job]]:
    """A job in this process, on the extended peer, with a small buffer."""
    jobs: list[Job] = []

    def make(buffer_messages: int) -> Job:
        payload = parse_payload(ext_payload(ext_peer, {}, short_tmp), {})
        job = Job(payload, buffer_messages=buffer_messages)
        job.start(handle_sigterm=False)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        if not job.finished:
            job.fail("test ended")
        job.close(timeout=DEADLINE)


def test_replay_6_disconnected_buffer_coalesces_progress_and_drops_oldest_logs(
    ext_peer: Peer, job_factory: Callable[[int], Job]
) -> None:
    job = job_factory(50)
    ext_peer.wait_type("started")
    ext_peer.stop()
    wait_until(lambda: not job.connected, "the worker to notice the outage")
    job.progress(0.5, "first phase")
    for i in range(2, 201):
        job.progress(i / 2)
    for i in range(1, 201):
        job.info(f"log {i}", i=i)
    job.checkpoint({"at": 200})
    job.complete("done")
    ext_peer.start()
    assert job.close(timeout=DEADLINE) == 0

    recorded = ext_peer.recorded
    progress = [m for m in recorded if m["type"] == "progress"]
    assert [(p["percent"], p["message"]) for p in progress] == [(100, "first phase")]
    kept = [m["data"]["i"] for m in recorded if m["type"] == "log" and m["level"] == "info"]
    notices = [m for m in recorded if m["type"] == "log" and m["level"] == "warn"]
    assert len(notices) == 1, "one notice, with the running total"
    dropped = notices[0]["data"]["dropped"]
    assert kept == list(range(dropped + 1, 201)), "the oldest logs went first"
    assert len(kept) < 50
    assert [m["type"] for m in recorded][-2:] == ["checkpoint", "completed"]
    seqs = [m["seq"] for m in recorded]
    assert seqs == sorted(set(seqs))


def test_replay_6_full_buffer_blocks_job_code_while_connected(
    ext_peer: Peer, job_factory: Callable[[int], Job]
) -> None:
    """Back-pressure: while connected a full buffer blocks the caller until acks free it."""
    job = job_factory(20)
    ext_peer.wait_type("started")
    ext_peer.ack_if = lambda message: False
    writer = threading.Thread(target=lambda: [job.info(f"{i}") for i in range(40)])
    writer.start()
    ext_peer.wait_for(lambda: ext_peer.types().count("log") >= 19, "the buffer to fill")
    writer.join(0.3)
    assert writer.is_alive(), "the 21st message must wait for an acknowledgement"
    assert ext_peer.types().count("log") < 21
    ext_peer.ack_if = lambda message: True
    last = max(m["seq"] for m in ext_peer.messages() if "seq" in m)
    ext_peer.send(ext_peer.server_message("ack", seq=last))
    writer.join(DEADLINE)
    assert not writer.is_alive()
    job.complete()
    assert job.close(timeout=DEADLINE) == 0
    assert ext_peer.types().count("log") == 40


def test_life_4_nothing_after_the_terminal_message(
    ext_peer: Peer, job_factory: Callable[[int], Job]
) -> None:
    """LIFE-4: after complete() every call raises and nothing more is sent."""
    job = job_factory(100)
    job.complete(1)
    for call in (lambda: job.info("late"), lambda: job.progress(1), lambda: job.fail("again")):
        with pytest.raises(JobFinishedError):
            call()
    assert job.close(timeout=DEADLINE) == 0
    assert ext_peer.types()[-1] == "completed"

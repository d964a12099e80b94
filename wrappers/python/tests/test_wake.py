"""The link thread wakes for every burst of messages, never only at its next heartbeat.

Job code hands a message to the link thread with at most one wake byte per
burst. If the link swallowed the byte of a message submitted while it was
draining earlier ones, it would believe a byte still on its way and sleep
until the next heartbeat was due: 150,000 progress calls took 40 s at the
default 5 s interval. These tests force that interleaving instead of hoping
a race shows it.
"""

from __future__ import annotations

import selectors
import threading
from pathlib import Path

from pyworker_testlib import DEADLINE, Peer, v1_payload

import extjob_worker
from extjob_worker import Job, parse_payload

HEARTBEAT_MS = 600_000  # far beyond every deadline here: only a wake can deliver the messages


def _readable(sock: object, timeout: float) -> bool:
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)  # type: ignore[arg-type]
        return bool(selector.select(timeout))


def test_wrap_4_a_message_submitted_while_the_link_drains_still_wakes_it() -> None:
    lock = threading.Condition()
    waker = extjob_worker._Waker()
    real_recv = waker._recv

    def recv_racing_a_submit(size: int) -> bytes:
        with lock:  # another job thread submits just as the link reads
            wake = waker.request()
        if wake:
            waker.send()
        return real_recv(size)

    try:
        with lock:
            assert waker.request()
        waker.send()
        waker._recv = recv_racing_a_submit  # type: ignore[method-assign]
        waker.drain(lock)
        waker._recv = real_recv  # type: ignore[method-assign]
        with lock:
            wake = waker.request()
        if wake:
            waker.send()
        assert _readable(waker.reader, DEADLINE), "the next message would not wake the link"
    finally:
        waker.close()


def test_wrap_4_messages_after_a_racing_drain_are_written_without_a_heartbeat(
    peer: Peer, short_tmp: Path
) -> None:
    """End to end on a v1 peer, heartbeat far away: the messages arrive at once."""
    payload = parse_payload(v1_payload(peer, {}, heartbeatIntervalMs=HEARTBEAT_MS), {})
    job = Job(payload)
    job.start(handle_sigterm=False)
    try:
        link = job._link
        real_recv = link._waker._recv
        raced = threading.Event()

        def recv_racing_a_submit(size: int) -> bytes:
            if not raced.is_set():
                raced.set()
                link.submit("progress", {"percent": 1.0})
            return real_recv(size)

        link._waker._recv = recv_racing_a_submit  # type: ignore[method-assign]
        job.progress(0.5)
        assert raced.wait(DEADLINE)
        peer.wait_for(lambda: len(peer.messages("progress")) == 2, "the first two progress")
        for i in range(2, 101):
            job.progress(float(i))
        job.complete("done")
        peer.wait_type("completed")
        assert len(peer.messages("progress")) == 101
    finally:
        job.close(timeout=DEADLINE)

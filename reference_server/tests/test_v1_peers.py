"""v1 peers as they really behave, and tokenless writers beside extended ones.

The workers here talk like the original project's wrappers
(ORIGINAL-BEHAVIOUR.md): the Python one heartbeats before ``started``, the
shell one opens a new connection for every message. A third test puts a
tokenless writer on the socket of an authenticated worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil

import pytest
from server_testlib import PYTHON, REPO, WORKERS, next_event, wait_finished, wait_for

# The original Python wrapper's double lives with the validate tests, which capture its stream.
ORIGINAL_PYTHON = [str(REPO / "protocol" / "tests" / "workers" / "original_python_worker.py")]
ORIGINAL_SHELL = [str(WORKERS / "original_shell_worker.sh")]
FIXTURE = [str(REPO / "wrappers" / "python" / "fixture_worker.py")]


def test_srv_2_the_original_python_wrappers_early_heartbeat_does_not_swallow_started(
    run_servers,
):
    async def body(start):
        server = await start()
        server.register_external("orig", command=PYTHON, args=ORIGINAL_PYTHON)
        seen = []
        server.events.on("*", lambda event: seen.append(event.name))
        with server.events.subscribe() as events:
            job_id = await server.enqueue("orig", {"steps": 3})
            spawned = await next_event(events, "job.external.spawned", job_id)
            await next_event(events, "job.orig.completed", job_id)
        job = await wait_finished(server, job_id)
        return spawned, job, seen, server.metrics.reconnects

    spawned, job, rest, reconnects = run_servers(body)
    assert spawned.data["pid"] > 0
    assert (job.status, job.result, job.progress_percent) == ("completed", {"steps": 3}, 100)
    assert "job.reconnected" not in rest and reconnects == 0


@pytest.mark.skipif(shutil.which("socat") is None, reason="the original shell wrapper uses socat")
def test_life_3_the_original_shell_wrappers_connection_per_message_is_not_a_reconnect(
    run_servers,
):
    steps = 5

    async def body(start):
        server = await start()
        server.register_external("orig", command="bash", args=ORIGINAL_SHELL)
        seen = []
        server.events.on("*", lambda event: seen.append(event.name))
        with server.events.subscribe() as events:
            job_id = await server.enqueue(
                "orig", {"steps": steps, "heartbeat_ms": 100, "sleep_ms": 100}
            )
            await next_event(events, "job.orig.completed", job_id)
        job = await wait_finished(server, job_id)
        logs = [e.message for e in await server.logs(job_id) if e.source == "worker"]
        return job, seen, logs, server.metrics

    job, seen, logs, metrics = run_servers(body)
    assert (job.status, job.result) == ("completed", {"steps": steps})
    assert logs == [f"line {i}" for i in range(1, steps + 1)]
    # Every message came on a connection of its own (2 per step, started,
    # completed, heartbeats): none of them is a reconnect.
    assert metrics.messages_received >= 2 * steps + 2
    assert seen.count("job.external.spawned") == 1
    assert "job.reconnected" not in seen and metrics.reconnects == 0


def test_auth_3_a_tokenless_writer_beside_an_authenticated_worker_changes_nothing(run_servers):
    slept_ms = 1500
    forged = b"".join(
        json.dumps({"type": kind, "jobId": "JOB", "timestamp": 1, "seq": 1_000_000, **body})
        .replace('"JOB"', "{job}")
        .encode()
        + b"\n"
        for kind, body in [
            ("log", {"level": "info", "message": "forged"}),
            ("completed", {"result": "forged"}),
        ]
    )

    async def body(start):
        server = await start()
        server.register_external("fx", command=PYTHON, args=FIXTURE)
        with server.events.subscribe() as events:
            job_id = await server.enqueue("fx", {"scenario": "sleep", "ms": slept_ms})
            lines = forged.replace(b"{job}", json.dumps(job_id).encode())
            path = os.path.join(server.config.socket_dir, f"{job_id}.1.sock")

            async def listening() -> bool:
                return os.path.exists(path)

            await wait_for(listening, what="the job's socket")
            # One tokenless writer as early as it can be, one once the worker is in.
            early_reader, early = await asyncio.open_unix_connection(path)
            early.write(b'{"type":"heartbeat","jobId":%s,"timestamp":1}\n' % json.dumps(
                job_id).encode())  # fmt: skip
            await next_event(events, "job.external.spawned", job_id)  # after its welcome
            late_reader, late = await asyncio.open_unix_connection(path)
            for writer in (early, late):
                writer.write(lines)
            # Both are closed without a word (NEG-3: they sent no hello).
            for reader in (early_reader, late_reader):
                assert await asyncio.wait_for(reader.read(), 10) == b""
            for writer in (early, late):
                writer.close()
            await next_event(events, "job.fx.completed", job_id)
        job = await wait_finished(server, job_id)
        logs = [e.message for e in await server.logs(job_id)]
        return job, logs

    job, logs = run_servers(body)
    assert (job.status, job.result) == ("completed", {"slept": slept_ms})
    assert "forged" not in logs

"""Restart and reconnect in process: graceful stop, re-adoption, spool, lost workers.

The kill -9 drill with a server subprocess is in test_restart_drill.py.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3

from server_testlib import (
    PYTHON,
    REPO,
    WORKERS,
    wait_finished,
    wait_for,
    wait_logs,
)

from extjob.server import open_store

FIXTURE = [str(REPO / "wrappers" / "python" / "fixture_worker.py")]


def define(server, **options):
    server.register_external("fx", command=PYTHON, args=FIXTURE, **options)
    server.register_external("v1", command=PYTHON, args=[str(WORKERS / "v1_worker.py")], **options)
    return server


def test_reconnect_5_graceful_stop_leaves_workers_running_and_restart_readopts_them(run_servers):
    """RECONNECT-5, REPLAY-4/5: every log line once, in order, across the restart."""

    async def body(start):
        first = define(await start())
        job_id = await first.enqueue("fx", {"scenario": "logs", "count": 40, "intervalMs": 25})
        await wait_logs(first, job_id, 5)
        pid = first.runs[job_id].rec.pid
        await first.stop()
        assert os.path.exists(f"/proc/{pid}")  # the worker outlived the server
        second = define(await start())
        with second.events.subscribe("job.reconnected") as reconnected:
            job = await wait_finished(second, job_id)
            assert (await reconnected.get(timeout=5)).job_id == job_id
        assert (job.status, job.result) == ("completed", {"count": 40})
        logs = [e.message for e in await second.logs(job_id) if e.source == "worker"]
        assert logs == [f"line {i}" for i in range(1, 41)]
        assert second.metrics.reconnects >= 1

    run_servers(body)


def test_spool_3_result_spooled_while_the_server_was_away(run_servers):
    async def body(start):
        first = define(await start(reconnect_window_ms=300))
        job_id = await first.enqueue("fx", {"scenario": "sleep", "ms": 200})
        await wait_for(lambda: _connected(first, job_id), what="the worker to connect")
        pid = first.runs[job_id].rec.pid
        await first.stop()
        await wait_for(lambda: _dead(pid), what="the worker to spool and exit")
        spools = [p for p in os.listdir(first.config.spool_dir) if p.endswith(".spool")]
        assert len(spools) == 1
        second = define(await start(reconnect_window_ms=300))
        job = await wait_finished(second, job_id)
        assert (job.status, job.result) == ("completed", {"slept": 200})
        assert not [p for p in os.listdir(second.config.spool_dir) if ".spool" in p]

    run_servers(body)


def test_spool_3_a_forged_spool_file_is_rejected_and_kept(run_servers):
    async def body(start):
        first = define(await start())
        job_id = await first.enqueue("v1", {"sleep_ms": 30_000, "heartbeat_ms": 100})
        await wait_for(lambda: _connected(first, job_id), what="the worker to connect")
        run = first.runs[job_id]
        rec = run.rec
        await first.stop()
        os.killpg(rec.pid, signal.SIGKILL)
        await wait_for(lambda: _dead(rec.pid), what="the worker to die")
        hello = {
            "type": "hello",
            "jobId": job_id,
            "timestamp": 1,
            "pid": 1,
            "token": "not-the-token-0123456789",
            "protocolVersion": 1,
            "features": ["auth", "replay", "spool"],
        }
        completed = {
            "type": "completed",
            "jobId": job_id,
            "timestamp": 2,
            "seq": 1,
            "result": "forged",
        }
        forged = json.dumps(hello) + "\n" + json.dumps(completed) + "\n"
        with open(rec.spool_path, "w") as f:
            f.write(forged)
        second = define(await start())
        job = await wait_finished(second, job_id)
        assert job.status == "failed" and job.result is None
        assert "exit status unknown" in job.error
        assert os.path.exists(rec.spool_path + ".rejected")

    run_servers(body)


def test_a_readopted_workers_exit_is_noticed(run_servers):
    """The worker is no longer our child: its exit is seen through a pidfd, status unknown."""

    async def body(start):
        first = define(await start())
        job_id = await first.enqueue(
            "v1", {"sleep_ms": 1500, "heartbeat_ms": 100, "terminal": "none", "exit": 3}
        )
        await wait_for(lambda: _connected(first, job_id), what="the worker to connect")
        await first.stop()
        second = define(await start())
        with second.events.subscribe() as events:
            job = await wait_finished(second, job_id)
            assert not [e for e in events._events if e.name == "job.lost"]
        assert job.status == "failed"
        assert "exit status unknown" in job.error and "re-adopted" in job.error

    run_servers(body)


def test_a_reused_pid_is_not_readopted(run_servers):
    """PID plus start time identify the worker: same PID, other start time -> lost."""

    async def body(start):
        first = define(await start())
        job_id = await first.enqueue("v1", {"sleep_ms": 30_000, "heartbeat_ms": 100})
        await wait_for(lambda: _connected(first, job_id), what="the worker to connect")
        pid = first.runs[job_id].rec.pid
        await first.stop()
        try:
            with sqlite3.connect(first.config.database) as db:
                db.execute("UPDATE jobs SET pid_start = pid_start + 1 WHERE id = ?", (job_id,))
            second = define(await start())  # decides during start, before we could subscribe
            job = await wait_finished(second, job_id)
            assert job.status == "failed" and "worker gone" in job.error
            assert "exit status unknown" in job.error and second.metrics.lost == 1
        finally:
            os.killpg(pid, signal.SIGKILL)

    run_servers(body)


def test_drain_waits_for_running_jobs(run_servers):
    async def body(start):
        server = define(await start())
        job_id = await server.enqueue("fx", {"scenario": "sleep", "ms": 400})
        await wait_for(lambda: _connected(server, job_id), what="the worker to connect")
        queued = await server.enqueue("fx", {"scenario": "sleep", "ms": 10}, run_at=0)
        await server.stop(drain=True)
        store = await open_store(server.config.database)
        try:
            assert (await store.get(job_id)).status == "completed"
            assert (await store.get(queued)).status in ("pending", "completed")
        finally:
            await store.close()

    run_servers(body)


async def _connected(server, job_id):
    run = server.runs.get(job_id)
    return run is not None and bool(run.connections)


async def _dead(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] in "ZX"
    except FileNotFoundError:
        return True


def test_a_crash_between_spawn_and_recording_the_pid_is_survived(run_servers):
    """The worker is found by its environment (ENV-1) and re-adopted; a job whose
    worker never started is queued again without counting an attempt."""

    async def body(start):
        first = define(await start())
        spawned = await first.enqueue("fx", {"scenario": "logs", "count": 20, "intervalMs": 25})
        await wait_logs(first, spawned, 2)
        await first.stop()
        with sqlite3.connect(first.config.database) as db:
            db.execute("UPDATE jobs SET pid = 0, pid_start = 0 WHERE id = ?", (spawned,))
            # A claim whose worker was never spawned: running, pid 0, no process.
            db.execute(
                "INSERT INTO jobs (id, name, data, status, attempt, max_attempts, run_at, "
                "created_at, owner, pid, token, socket_path, spool_path, out_path, err_path) "
                "VALUES ('j_unspawned', 'fx', '{}', 'running', 1, 1, 0, 0, ?, 0, "
                "'tttttttttttttttt', ?, ?, ?, ?)",
                (
                    first.config.server_id,
                    *(
                        f"{first.config.spool_dir}/j_unspawned.1.{x}"
                        for x in ("sock", "spool", "out", "err")
                    ),
                ),
            )
        second = define(await start())
        job = await wait_finished(second, spawned)
        assert (job.status, job.result, job.attempt) == ("completed", {"count": 20}, 1)
        lines = [e.message for e in await second.logs(spawned) if e.source == "worker"]
        assert lines == [f"line {i}" for i in range(1, 21)]
        job = await wait_finished(second, "j_unspawned")
        assert (job.status, job.result, job.attempt) == ("completed", {"ok": True}, 1)

    run_servers(body)

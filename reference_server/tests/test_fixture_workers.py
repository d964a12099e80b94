"""The lifecycle with the real fixture workers of every wrapper (Python, shell, Go).

Each wrapper negotiates the extensions, so these runs exercise hello/welcome,
seq and acks, cancel over the connection, checkpoints and retries.
"""

from __future__ import annotations

from server_testlib import next_event, wait_finished, wait_for, wait_logs


async def fixture_server(start, fixture_worker, **definition):
    server = await start()
    command, args = fixture_worker
    server.register_external("fx", command=command, args=args, **definition)
    return server


def test_srv_4_complete(run_servers, fixture_worker):
    async def body(start):
        server = await fixture_server(start, fixture_worker)
        with server.events.subscribe() as events:
            job_id = await server.enqueue("fx", {"scenario": "complete"})
            await next_event(events, "job.external.spawned", job_id)
            progress = await next_event(events, "job.external.progress", job_id)
            await next_event(events, "job.fx.completed", job_id)
        assert (progress.data["percent"], progress.data["message"]) == (50, "halfway")
        job = await wait_finished(server, job_id)
        assert (job.status, job.result, job.progress_message) == (
            "completed",
            {"ok": True},
            "halfway",
        )

    run_servers(body)


def test_srv_3_logs_exactly_once_in_order(run_servers, fixture_worker):
    async def body(start):
        server = await fixture_server(start, fixture_worker)
        job_id = await server.enqueue("fx", {"scenario": "logs", "count": 50})
        job = await wait_finished(server, job_id)
        assert (job.status, job.result) == ("completed", {"count": 50})
        logs = [e for e in await server.logs(job_id) if e.source == "worker"]
        assert [(e.message, e.data) for e in logs] == [
            (f"line {i}", {"i": i}) for i in range(1, 51)
        ]

    run_servers(body)


def test_srv_4_exit_1_fail_and_crash(run_servers, fixture_worker):
    async def body(start):
        server = await fixture_server(start, fixture_worker)
        failed = await server.enqueue("fx", {"scenario": "fail", "message": "no luck"})
        crashed = await server.enqueue("fx", {"scenario": "crash", "code": 7})
        job = await wait_finished(server, failed)
        assert (job.status, job.error) == ("failed", "no luck")
        job = await wait_finished(server, crashed)
        assert (job.status, job.error) == ("failed", "Process exited with code 7")

    run_servers(body)


def test_cancel_1_cancel_4_is_graceful_over_control(run_servers, fixture_worker):
    """CANCEL-1..4: the cancel message reaches the job code, which stops; no signal needed."""

    async def body(start):
        server = await fixture_server(start, fixture_worker, kill_grace_ms=10_000)
        with server.events.subscribe() as events:
            job_id = await server.enqueue("fx", {"scenario": "cancel", "ms": 30_000})
            await next_event(events, "job.external.spawned", job_id)
            await wait_for(lambda: _has_control(server, job_id), what="the hello")
            assert await server.cancel(job_id)
            await next_event(events, "job.cancelled", job_id)
        job = await wait_finished(server, job_id)
        assert job.status == "cancelled"
        assert not any("SIGTERM" in e.message for e in await server.logs(job_id))
        assert server.metrics.killed_count == 0

    run_servers(body)


async def _has_control(server, job_id):
    run = server.runs.get(job_id)
    return run is not None and run.attempt.control is not None


def test_timeout_1_cancels_with_reason_timeout(run_servers, fixture_worker):
    async def body(start):
        # The timeout must come after the hello (without control the server goes
        # straight to KILL-1): 2 s leaves room for a runtime starting on a busy machine.
        server = await fixture_server(start, fixture_worker, timeout_ms=2000, kill_grace_ms=10_000)
        job_id = await server.enqueue("fx", {"scenario": "cancel", "ms": 30_000})
        job = await wait_finished(server, job_id)
        assert (job.status, job.error) == ("failed", "Job timed out after 2000 ms")
        assert server.metrics.killed_count == 0  # the worker obeyed the cancel message

    run_servers(body)


def test_ckpt_2_checkpoint_is_handed_to_the_retry(run_servers, fixture_worker):
    async def body(start):
        server = await fixture_server(start, fixture_worker, retry_backoff_ms=50)
        value = {"step": 7, "text": "tab\there"}
        job_id = await server.enqueue(
            "fx", {"scenario": "checkpoint", "value": value}, max_attempts=2
        )
        job = await wait_finished(server, job_id)
        assert (job.status, job.attempt, job.result) == ("completed", 2, {"resumedFrom": value})
        assert job.checkpoint == value

    run_servers(body)


def test_hb_1_hb_2_short_heartbeat_timeout_is_honoured(run_servers, fixture_worker):
    """HB-1: the interval in the payload is derived from the timeout, so a sleeping
    job with a 1200 ms timeout (below the v1 default interval of 5000 ms) is never stale."""

    async def body(start):
        server = await fixture_server(start, fixture_worker, heartbeat_timeout_ms=1200)
        with server.events.subscribe("job.stale") as stale:
            job_id = await server.enqueue("fx", {"scenario": "sleep", "ms": 2500})
            job = await wait_finished(server, job_id)
            assert (job.status, job.result) == ("completed", {"slept": 2500})
            assert not stale._events

    run_servers(body)


def test_limit_1_large_result(run_servers, fixture_worker):
    async def body(start):
        server = await fixture_server(start, fixture_worker)
        job_id = await server.enqueue("fx", {"scenario": "large", "bytes": 1 << 20})
        job = await wait_finished(server, job_id, timeout=30)
        assert job.status == "completed" and job.result == "x" * (1 << 20)

    run_servers(body)


def test_msg_6_fix_3_levels_and_no_stdout(run_servers, fixture_worker):
    async def body(start):
        server = await fixture_server(start, fixture_worker)
        job_id = await server.enqueue("fx", {"scenario": "levels"})
        assert (await wait_finished(server, job_id)).status == "completed"
        logs = await wait_logs(server, job_id, 4)
        assert [(e.level, e.data) for e in logs if e.source == "worker"] == [
            (level, {"level": level}) for level in ("debug", "info", "warn", "error")
        ]
        assert not [e for e in logs if e.source == "stdout"]  # FIX-3

    run_servers(body)

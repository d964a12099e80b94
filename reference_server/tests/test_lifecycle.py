"""The job lifecycle with real worker processes on real sockets (SPEC sections 5 and 6)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import sqlite3
import stat
import time
from collections.abc import Iterator

import pytest
from server_testlib import PYTHON, WORKERS, next_event, wait_finished, wait_for

from extjob.server import JobServer

V1 = [str(WORKERS / "v1_worker.py")]


async def v1_server(start, **definition) -> JobServer:
    server = await start()
    server.register_external("v1", command=PYTHON, args=V1, **definition)
    return server


def test_srv_2_srv_3_srv_4_srv_7_a_v1_worker_completes_with_progress_logs_and_output(run_servers):
    async def body(start):
        server = await v1_server(start)
        with server.events.subscribe() as events:
            job_id = await server.enqueue("v1", {"steps": 2, "stdout": "out!", "stderr": "err!"})
            spawned = await next_event(events, "job.external.spawned", job_id)
            completed = await next_event(events, "job.v1.completed", job_id)
        job = await wait_finished(server, job_id)
        assert job.status == "completed"
        assert job.result == {"pid": spawned.data["pid"]} == completed.data["result"]
        assert (job.progress_percent, job.progress_message) == (100, "step 2")
        assert job.attempt == 1 and job.finished_at >= job.started_at
        await wait_for(lambda: _has_logs(server, job_id, 4), what="stdout and stderr lines")
        logs = await server.logs(job_id)
        assert [(e.index, e.source, e.level, e.message) for e in logs] == [
            (1, "worker", "info", "line 1"),
            (2, "worker", "info", "line 2"),
            (3, "stdout", "info", "out!"),
            (4, "stderr", "error", "err!"),
        ]
        assert logs[0].data == {"i": 1}
        assert [e.index for e in await server.logs(job_id, after=2)] == [3, 4]

    run_servers(body)


async def _has_logs(server, job_id, n):
    return len(await server.logs(job_id)) >= n


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        ({"terminal": "none", "exit": 0}, "completed", None),
        ({"terminal": "none", "exit": 3}, "failed", "Process exited with code 3"),
        ({"terminal": "none", "exit": "kill"}, "failed", "Process killed by signal SIGKILL"),
        ({"terminal": "failed", "exit": 1}, "failed", "it broke"),
        ({"terminal": "completed", "exit": 4}, "completed", None),
    ],
)
def test_exit_1_outcome_table(run_servers, data, status, error):
    async def body(start):
        server = await v1_server(start)
        job_id = await server.enqueue("v1", data)
        job = await wait_finished(server, job_id)
        assert (job.status, job.error) == (status, error)
        if data == {"terminal": "none", "exit": 0}:
            assert job.result is None
            messages = [e.message for e in await server.logs(job_id)]
            assert "exited 0 without a terminal message" in messages
        if data["terminal"] == "failed":
            assert job.stack == "here"
        if data == {"terminal": "completed", "exit": 4}:
            await wait_for(lambda: _has_logs(server, job_id, 1), what="the exit warning")
            assert (await server.logs(job_id))[-1].message.endswith("Process exited with code 4")

    run_servers(body)


def test_spawn_error_fails_the_job_with_that_error(run_servers):
    async def body(start):
        server = await start()
        server.register_external("missing", command="/nonexistent/worker", max_attempts=3)
        job_id = await server.enqueue("missing", {})
        job = await wait_finished(server, job_id)
        assert job.status == "failed" and job.attempt == 1  # retrying cannot help
        assert job.error.startswith("spawn failed: ") and "/nonexistent/worker" in job.error

    run_servers(body)


def test_stale_1_and_stale_2_then_kill_1_sigkill_after_grace(run_servers):
    """A silent worker that ignores SIGTERM: stale at the timeout, SIGTERM at twice it,
    SIGKILL after the grace."""
    # The silence counts from the spawn (START-1): with 400 ms, a loaded CI
    # machine started the worker's Python after the first stale, its started
    # ended that silence, and a second one was counted (stale_count 2).
    timeout_ms, grace_ms = 1000, 300

    async def body(start):
        server = await v1_server(start, heartbeat_timeout_ms=timeout_ms, kill_grace_ms=grace_ms)
        with server.events.subscribe() as events:
            job_id = await server.enqueue("v1", {"ignore_term": True, "sleep_ms": 30_000})
            spawned = await next_event(events, "job.external.spawned", job_id)
            stale = await next_event(events, "job.stale", job_id)
            failed = await next_event(events, "job.failed", job_id)
        silence = stale.time - spawned.time
        # STALE-1: no earlier than the timeout, no later than timeout + slack (+ margin).
        assert timeout_ms / 1000 - 0.01 <= silence < timeout_ms / 1000 + 0.5
        assert stale.data["timeSinceHeartbeat"] >= timeout_ms
        assert failed.data["error"].startswith("Heartbeat timeout: no message for ")
        # STALE-2 at 2x the timeout, then KILL-1: the worker ignores SIGTERM.
        assert failed.time - spawned.time >= (2 * timeout_ms + grace_ms) / 1000 - 0.01
        messages = [e.message for e in await server.logs(job_id)]
        assert any("SIGTERM" in m for m in messages) and any("SIGKILL" in m for m in messages)
        assert server.metrics.stale_count == 1 and server.metrics.killed_count == 1

    run_servers(body)


def test_hb_3_heartbeats_keep_a_job_alive(run_servers):
    async def body(start):
        server = await v1_server(start, heartbeat_timeout_ms=1500)
        with server.events.subscribe("job.stale") as stale:
            job_id = await server.enqueue("v1", {"sleep_ms": 3000, "heartbeat_ms": 50})
            job = await wait_finished(server, job_id)
            assert job.status == "completed"
            assert stale.dropped == 0 and not stale._events

    run_servers(body)


def test_hb_4_heartbeats_are_not_written_to_the_store(run_servers):
    async def body(start):
        # A lease renewed every 200 s: the server's own writes stay out of the window.
        server = await start(lease_ms=600_000)
        server.register_external("v1", command=PYTHON, args=V1)
        with server.events.subscribe("job.external.spawned") as spawned:
            job_id = await server.enqueue("v1", {"sleep_ms": 60_000, "heartbeat_ms": 20})
            await next_event(spawned, "job.external.spawned", job_id)  # started is stored
        store = sqlite3.connect(server.config.database)
        # Changes when another connection commits to the database.
        commits = store.execute("PRAGMA data_version").fetchone()
        received = server.metrics.messages_received

        async def beats() -> bool:
            return server.metrics.messages_received >= received + 25

        await wait_for(beats, what="25 heartbeats")
        assert store.execute("PRAGMA data_version").fetchone() == commits
        store.close()

    run_servers(body)


def test_start_1_silence_before_the_first_message_counts(run_servers):
    async def body(start):
        server = await v1_server(start, heartbeat_timeout_ms=200, kill_grace_ms=100)
        job_id = await server.enqueue("v1", {"silent_ms": 5000})
        job = await wait_finished(server, job_id)
        assert job.status == "failed" and job.error.startswith("Heartbeat timeout")

    run_servers(body)


def test_timeout_1_v1_worker_is_terminated(run_servers):
    async def body(start):
        server = await v1_server(start, timeout_ms=300, kill_grace_ms=200)
        t0 = time.monotonic()
        job_id = await server.enqueue("v1", {"sleep_ms": 30_000, "heartbeat_ms": 50})
        job = await wait_finished(server, job_id)
        assert (job.status, job.error) == ("failed", "Job timed out after 300 ms")
        assert time.monotonic() - t0 >= 0.3

    run_servers(body)


def test_srv_8_cancel_signals_the_whole_process_group(run_servers):
    async def body(start):
        server = await v1_server(start)
        job_id = await server.enqueue(
            "v1", {"child": True, "sleep_ms": 30_000, "heartbeat_ms": 100}
        )
        await wait_for(lambda: _has_logs(server, job_id, 1), what="the child's pid")
        child = int((await server.logs(job_id))[0].message.split("=")[1])
        assert await server.cancel(job_id)
        job = await wait_finished(server, job_id)
        assert job.status == "cancelled"
        await wait_for(lambda: _gone(child), what="the grandchild to die")
        assert not await server.cancel(job_id)  # already finished

    run_servers(body)


async def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] in "ZX"
    except FileNotFoundError:
        return True


def test_cancel_pending_and_unknown(run_servers):
    async def body(start):
        server = await v1_server(start)
        job_id = await server.enqueue("v1", {}, run_at=time.time() * 1000 + 60_000)
        with server.events.subscribe("job.cancelled") as events:
            assert await server.cancel(job_id)
            assert (await events.get(timeout=5)).job_id == job_id
        assert (await server.get(job_id)).status == "cancelled"
        assert not await server.cancel(job_id)
        assert not await server.cancel("j_nope")

    run_servers(body)


def test_ckpt_4_retries_with_backoff(run_servers):
    async def body(start):
        server = await v1_server(start, retry_backoff_ms=150, max_retry_backoff_ms=200)
        with server.events.subscribe("job.failed") as failures:
            job_id = await server.enqueue("v1", {"terminal": "failed", "exit": 1}, max_attempts=3)
            events = [await failures.get(timeout=10) for _ in range(3)]
        assert [e.data["attempt"] for e in events] == [1, 2, 3]
        assert events[0].data["retryAt"] and events[1].data["retryAt"]
        assert events[2].data["retryAt"] is None
        assert events[1].time - events[0].time >= 0.15 - 0.01  # backoff x 2^0
        assert events[2].time - events[1].time >= 0.2 - 0.01  # 300 capped at 200
        job = await wait_finished(server, job_id)
        assert (job.status, job.attempt, job.error) == ("failed", 3, "it broke")

    run_servers(body)


def test_concurrency_per_name_and_global(run_servers):
    async def body(start):
        server = await start(concurrency=3)
        server.register_external("one", command=PYTHON, args=V1, concurrency=1)
        server.register_external("many", command=PYTHON, args=V1)
        peak = {"one": 0, "all": 0}

        def watch(_event):
            peak["one"] = max(peak["one"], sum(r.name == "one" for r in server.runs.values()))
            peak["all"] = max(peak["all"], len(server.runs))

        server.events.on("*", watch)
        ids = [await server.enqueue("one", {"sleep_ms": 200}) for _ in range(3)]
        ids += [await server.enqueue("many", {"sleep_ms": 200}) for _ in range(4)]
        for job_id in ids:
            assert (await wait_finished(server, job_id)).status == "completed"
        assert peak == {"one": 1, "all": 3}

    run_servers(body)


def test_priority_then_age(run_servers):
    async def body(start):
        server = await start(concurrency=1)
        server.register_external("v1", command=PYTHON, args=V1)
        order = []
        server.events.on("job.completed", lambda e: order.append(e.job_id))
        blocker = await server.enqueue("v1", {"sleep_ms": 300})
        await wait_for(lambda: _running(server, blocker), what="the blocker to run")
        low = await server.enqueue("v1", {})
        high = await server.enqueue("v1", {}, priority=5)
        late = await server.enqueue("v1", {}, priority=9, run_at=time.time() * 1000 + 60_000)
        await wait_finished(server, low)
        assert order == [blocker, high, low]
        assert (await server.get(late)).status == "pending"

    run_servers(body)


async def _running(server, job_id):
    job = await server.get(job_id)
    return job.status == "running"


def test_env_1_and_env_3_worker_environment(run_servers, monkeypatch):
    monkeypatch.setenv("EXTJOB_API_TOKEN", "server-secret")
    monkeypatch.setenv("MY_SECRET", "also-secret")
    monkeypatch.setenv("HARMLESS", "visible")
    names = [
        "EXTJOB_JOB_ID",
        "DONKEYLABS_JOB_ID",
        "EXTJOB_JOB_NAME",
        "DONKEYLABS_SOCKET_PATH",
        "DONKEYLABS_TCP_PORT",
        "EXTJOB_API_TOKEN",
        "MY_SECRET",
        "HARMLESS",
        "FROM_DEF",
    ]

    async def body(start):
        server = await start(secret_env=("MY_SECRET",))
        server.register_external("v1", command=PYTHON, args=V1, env={"FROM_DEF": "yes"})
        job_id = await server.enqueue("v1", {"env": names})
        await wait_finished(server, job_id)
        await wait_for(lambda: _has_logs(server, job_id, len(names)), what="the env lines")
        lines = {e.message for e in await server.logs(job_id)}
        assert f"EXTJOB_JOB_ID={job_id}" in lines and f"DONKEYLABS_JOB_ID={job_id}" in lines
        assert "EXTJOB_JOB_NAME=v1" in lines and "DONKEYLABS_TCP_PORT=" in lines
        assert any(line.startswith("DONKEYLABS_SOCKET_PATH=/") for line in lines)
        assert {
            "EXTJOB_API_TOKEN unset",
            "MY_SECRET unset",
            "HARMLESS=visible",
            "FROM_DEF=yes",
        } <= lines

    run_servers(body)


def test_trans_2_socket_and_directory_modes(run_servers):
    async def body(start):
        server = await v1_server(start)
        job_id = await server.enqueue("v1", {"sleep_ms": 5000, "heartbeat_ms": 100})
        await wait_for(lambda: _running(server, job_id), what="the job to run")
        run = server.runs[job_id]
        assert stat.S_IMODE(os.stat(server.config.socket_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(server.config.spool_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(run.rec.socket_path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(run.rec.socket_path).st_mode)
        await server.cancel(job_id)

    run_servers(body)


def test_limit_2_enqueue_rejects_bad_input_clearly(run_servers):
    async def body(start):
        server = await v1_server(start)
        with pytest.raises(KeyError, match="no job definition named 'nope'"):
            await server.enqueue("nope", {})
        with pytest.raises(ValueError, match="max_attempts"):
            await server.enqueue("v1", {}, max_attempts=0)
        with pytest.raises(ValueError, match="not JSON"):
            await server.enqueue("v1", {"x": float("nan")})
        with pytest.raises(ValueError, match="LIMIT-2"):
            await server.enqueue("v1", "x" * (16 * 1024 * 1024))
        with pytest.raises(ValueError, match="run_at"):
            await server.enqueue("v1", {}, run_at="soon")
        assert await server.list() == []

    run_servers(body)


@contextlib.contextmanager
def descriptors_exhausted() -> Iterator[None]:
    """This process (the server's) can open no file descriptor.

    A new descriptor must be below the soft limit; with the limit at 3, only
    0-2 would do, and they are open: whatever the server closes meanwhile
    (a worker's pidfd when it exits) cannot be reused either.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(
    "when",
    ["print_after", "connect_after"],
    ids=["output-read-at-the-exit", "connection-never-accepted-before-the-exit"],
)
def test_exit_1_nothing_a_worker_wrote_is_lost_while_the_server_is_out_of_descriptors(
    run_servers, short_tmp, caplog, when
):
    # At the worker's exit the server accepts what waits in its listener's
    # backlog, reads the rest of its output files and removes them. Out of
    # descriptors, the connection was given up after a second (with its
    # `failed`: exit 0 made the job "completed") and the lines went with the
    # files. Now both wait until descriptors are free again.
    flag, ready = short_tmp / "go", short_tmp / "go.tmp"
    ready.touch()

    async def body(start):
        server = await v1_server(start)
        data = {when: str(flag), "steps": 1, "stdout": "last words", "stderr": "why"}
        job_id = await server.enqueue("v1", {**data, "terminal": "failed"})
        await wait_for(lambda: _running(server, job_id), what="the job to run")
        if when == "print_after":
            await wait_for(lambda: _has_logs(server, job_id, 1), what="the worker's first log")
        run = server.runs[job_id]

        async def exited():
            return run.exited

        async def over_or_waiting():
            return run.done.done() or "out of file descriptors" in caplog.text

        with descriptors_exhausted():
            os.rename(ready, flag)  # needs no descriptor
            await wait_for(exited, what="the worker to exit")
            await wait_for(over_or_waiting, what="the attempt to end or to wait")
            assert not run.done.done() and os.path.exists(run.rec.out_path)  # kept, unread
        await asyncio.wait_for(run.done, 10)  # the attempt is over (its status may be before)
        job = await server.get(job_id)
        assert (job.status, job.error) == ("failed", "it broke")
        logs = {(e.source, e.message) for e in await server.logs(job_id)}
        assert {("stdout", "last words"), ("stderr", "why")} <= logs

    run_servers(body)


def test_exit_1_a_job_whose_socket_is_above_descriptor_1023_is_decided(run_servers):
    # select() refuses a descriptor above 1023, which a server with a few
    # hundred jobs gives its sockets: the check for a connection waiting in
    # the backlog raised, and the exit of every such job was never decided.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200 if hard == resource.RLIM_INFINITY else min(hard, 1200)
    if wanted < 1200:
        pytest.skip(f"the hard limit on open files is {hard}")

    async def body(start):
        server = await v1_server(start)
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        try:
            job_id = await server.enqueue("v1", {"steps": 1})
            await wait_finished(server, job_id)

            async def decided():
                return job_id not in server.runs

            await wait_for(decided, what="the attempt to be decided and released")
        finally:
            for fd in held:
                os.close(fd)

    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        run_servers(body)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

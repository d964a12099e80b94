"""Drills: several real ``extjob serve`` processes on one real PostgreSQL database.

Each drill starts real server processes (``extjob serve --database URL``)
and real workers (the Python and Go fixtures), and breaks things the way
production does: kill -9 of a server, of a whole host (the server and its
workers), two servers starting on an empty database, the database
restarting under load. What must hold (issue 12): every job runs to its end
exactly once per attempt, every log line is stored once and in order, a lost
host's jobs are retried elsewhere after its lease, and nothing the lost
attempts send afterwards changes anything (AUTH-4, fenced writes).

The servers poll their queue only once a minute here, so every claim in
these drills follows a wake-up: a NOTIFY from another server, or a local
event.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgserver import PgServer
from server_testlib import PYTHON, REPO, WORKERS

from extjob.protocol import PROTOCOL_VERSION

TOKEN = "drill-token-0123456789abcdef"
WAIT = 120.0


@dataclass
class Node:
    """One server process of the cluster."""

    name: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes]
    url: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {TOKEN}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return json.loads(raw) if raw.startswith((b"{", b"[")) else raw.decode()


class Cluster:
    def __init__(self, root: Path, database: str, go: list[str], lease_ms: int) -> None:
        self.root = root
        self.database = database
        self.go = go
        self.lease_ms = lease_ms
        self.nodes: dict[str, Node] = {}

    def server_id(self, name: str) -> str:
        return f"{socket.gethostname()}:{self.root / name / 's'}"

    def start(self, name: str, wait: bool = True) -> Node | subprocess.Popen[bytes]:
        home = self.root / name
        home.mkdir(exist_ok=True)
        config = home / "extjob.toml"
        config.write_text(
            f"""
socket_dir = "s"
spool_dir = "spool"
concurrency = 24
poll_interval_ms = 60000
lease_ms = {self.lease_ms}

[http]
port = 0
token = "{TOKEN}"

[jobs.py]
command = {json.dumps(PYTHON)}
args = [{json.dumps(str(REPO / "wrappers" / "python" / "fixture_worker.py"))}]
heartbeat_timeout_ms = 10000

[jobs.go]
command = {json.dumps(self.go[0])}
heartbeat_timeout_ms = 10000

[jobs.resumable]
command = {json.dumps(PYTHON)}
args = [{json.dumps(str(WORKERS / "resumable_worker.py"))}]
heartbeat_timeout_ms = 10000
max_attempts = 3
retry_backoff_ms = 0
"""
        )
        log = home / "server.log"
        with log.open("ab") as err:
            process = subprocess.Popen(
                [PYTHON, "-m", "extjob.cli", "serve", "--config", str(config)],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "EXTJOB_DATABASE": self.database},
            )
        if not wait:
            return process
        return self.ready(name, process)

    def ready(self, name: str, process: subprocess.Popen[bytes]) -> Node:
        home = self.root / name
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline().decode() if ready else ""
        assert line.startswith("extjob: listening on "), (home / "server.log").read_text()[-4000:]
        url = line.removeprefix("extjob: listening on ").strip().rstrip("/")
        node = Node(name, home / "extjob.toml", home / "server.log", process, url)
        self.nodes[name] = node
        return node

    def kill(self, name: str) -> None:
        node = self.nodes.pop(name)
        node.process.kill()
        node.process.wait()

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.database, autocommit=True) as conn:
            return conn.execute(query, args).fetchall()  # type: ignore[arg-type]

    def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes.values():
            try:
                node.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                node.process.kill()
        for (pid,) in self.sql("SELECT pid FROM jobs WHERE status = 'running' AND pid > 0"):
            _killpg(pid)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.parent.name}\n{p.read_text()[-3000:]}" for p in self.root.glob("*/server.log")
        )


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return value


@pytest.fixture
def cluster(pg_url: str, go_fixture: list[str]):
    root = Path(tempfile.mkdtemp(prefix="xc", dir="/tmp"))
    made: list[Cluster] = []

    def make(lease_ms: int = 10_000) -> Cluster:
        made.append(Cluster(root, pg_url, go_fixture, lease_ms))
        return made[-1]

    yield make
    for c in made:
        try:
            c.stop_all()
        except Exception:
            sys.stderr.write(c.logs())
            raise


def _finished(c: Cluster, ids: list[str]) -> bool:
    rows = c.sql(
        "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status IN ('completed', 'failed', "
        "'cancelled')",
        ids,
    )
    return rows[0][0] == len(ids)


def _check_logs(c: Cluster, ids: list[str], lines: int) -> None:
    """Every worker log line of every job stored once, in order."""
    rows = c.sql(
        "SELECT job_id, array_agg(message ORDER BY idx) FROM logs "
        "WHERE job_id = ANY(%s) AND source = 'worker' GROUP BY job_id",
        ids,
    )
    found = dict(rows)
    expected = [f"line {i}" for i in range(1, lines + 1)]
    wrong = [job_id for job_id in ids if found.get(job_id) != expected]
    assert not wrong, [
        (j, " ".join(m.removeprefix("line ") for m in found.get(j) or [])) for j in wrong[:2]
    ]


def test_cluster_drill_three_servers_run_each_job_exactly_once(cluster):
    c = cluster()
    nodes = [c.start(f"n{i}") for i in range(3)]
    data = {"scenario": "logs", "count": 8, "intervalMs": 5}
    ids = []
    for i in range(300):  # enqueued through every server in turn
        node = nodes[i % 3]
        assert isinstance(node, Node)
        ids.append(
            node.call("POST", "/api/jobs", {"name": "py" if i % 2 else "go", "data": data})["id"]
        )
    try:
        wait_until(lambda: _finished(c, ids), WAIT, "every job to finish")
        rows = c.sql(
            "SELECT status, attempt, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY 1, 2", ids
        )
        assert rows == [("completed", 1, 300)]
        by_server = dict(c.sql("SELECT owner, count(*) FROM jobs GROUP BY owner"))
        assert sorted(by_server) == sorted(c.server_id(f"n{i}") for i in range(3)), by_server
        assert all(n > 0 for n in by_server.values()), by_server
        _check_logs(c, ids, 8)
        # One API, any server: every server sees every job and its log.
        some = ids[::37]
        for node in nodes:
            assert isinstance(node, Node)
            for job_id in some:
                assert node.call("GET", f"/api/jobs/{job_id}")["status"] == "completed"
                lines = node.call("GET", f"/api/jobs/{job_id}/logs")["logs"]
                assert [e["message"] for e in lines if e["source"] == "worker"][-1] == "line 8"
        metrics = nodes[0].call("GET", "/metrics")
        assert "extjob_cluster_servers 3" in metrics
    except BaseException:
        sys.stderr.write(c.logs())
        raise


def test_reconnect_5_cluster_drill_kill_9_and_restart_within_the_lease_readopts_workers(cluster):
    c = cluster(lease_ms=30_000)
    a, b = c.start("a"), c.start("b")
    assert isinstance(a, Node) and isinstance(b, Node)
    data = {"scenario": "logs", "count": 40, "intervalMs": 50}
    ids = [
        a.call("POST", "/api/jobs", {"name": "py" if i % 2 else "go", "data": data})["id"]
        for i in range(40)
    ]
    try:
        mine = c.server_id("a")
        wait_until(
            lambda: (
                c.sql(
                    "SELECT count(*) FROM logs l JOIN jobs j ON j.id = l.job_id WHERE j.owner = %s",
                    mine,
                )[0][0]
                > 40
            ),
            WAIT,
            "server a's workers to log",
        )
        # Spawned, with a PID stored: a claim not yet spawned is queued again
        # on restart (the attempt does not count), and may go to b.
        running_a = [
            r[0]
            for r in c.sql(
                "SELECT id FROM jobs WHERE owner = %s AND status = 'running' AND pid > 0", mine
            )
        ]
        assert running_a
        c.kill("a")
        c.start("a")
        wait_until(lambda: _finished(c, ids), WAIT, "every job to finish")
        rows = c.sql("SELECT id, status, attempt, error FROM jobs WHERE id = ANY(%s)", ids)
        assert all((s, n) == ("completed", 1) for _, s, n, _ in rows), rows
        _check_logs(c, ids, 40)
        reconnected = c.sql(
            "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND owner = %s", running_a, mine
        )[0][0]
        assert reconnected == len(running_a)  # re-adopted by a, not retried elsewhere
    except BaseException:
        sys.stderr.write(c.logs())
        raise


def test_ckpt_4_auth_4_cluster_drill_lost_host_jobs_are_retried_elsewhere_and_fenced(cluster):
    c = cluster(lease_ms=1500)
    a, b = c.start("a"), c.start("b")
    assert isinstance(a, Node) and isinstance(b, Node)
    lost_id = c.server_id("a")
    for _ in range(20):
        a.call("POST", "/api/jobs", {"name": "resumable", "data": {"ms": 600_000}})
    try:
        wait_until(
            lambda: (
                c.sql(
                    "SELECT count(*) FILTER (WHERE status = 'pending'), "
                    "count(*) FILTER (WHERE owner = %s AND checkpoint IS NULL), "
                    "count(*) FILTER (WHERE owner = %s AND pid > 0) FROM jobs",
                    lost_id,
                    lost_id,
                )[0]
                in [(0, 0, n) for n in range(1, 21)]
            ),
            WAIT,
            "every job claimed, server a's past their checkpoint",
        )
        # A lost host: the server and all its workers die at once.
        old = c.sql(
            "SELECT id, attempt, token, pid FROM jobs WHERE owner = %s AND status = 'running'",
            lost_id,
        )
        c.kill("a")
        for _, _, _, pid in old:
            _killpg(pid)
        # Retried on b after a's lease expired, resuming from the checkpoint (CKPT-4).
        # The retry of a resumable job returns at once; the others were b's all along.
        lost_ids = [r[0] for r in old]
        wait_until(
            lambda: (
                c.sql(
                    "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND status = 'completed'",
                    lost_ids,
                )[0][0]
                == len(lost_ids)
            ),
            WAIT,
            "the lost jobs to be retried and complete",
        )
        rows = c.sql("SELECT id, attempt, result, owner FROM jobs WHERE id = ANY(%s)", lost_ids)
        for job_id, attempt, result, owner in rows:
            assert (attempt, owner) == (2, c.server_id("b")), job_id
            assert json.loads(result) == {"resumedFrom": {"step": 1}, "attempt": 2}, job_id
        # A late message of a lost attempt, replayed by hand with its old token,
        # to a current attempt of one of b's running jobs: refused (AUTH-4).
        victim, attempt, token, _ = old[0]
        busy = c.sql(
            "SELECT id, socket_path FROM jobs WHERE owner = %s AND status = 'running' LIMIT 1",
            c.server_id("b"),
        )
        assert busy, "b runs the jobs that a never claimed"
        running_id, path = busy[0]
        before = c.sql(
            "SELECT status, attempt, result, log_count FROM jobs WHERE id = %s", running_id
        )
        reply = _replay(path, running_id, token)
        assert '"type":"error"' in reply.replace(" ", "") and "AUTH-4" in reply, reply
        # And through the store: every write of the lost attempt is refused.
        applied = _late_write(c.database, lost_id, victim, attempt)
        assert applied == [False, False]
        after = c.sql(
            "SELECT status, attempt, result, log_count FROM jobs WHERE id = %s", running_id
        )
        assert before == after
        job = c.sql("SELECT status, attempt, result FROM jobs WHERE id = %s", victim)
        assert job[0][:2] == ("completed", 2)
        metrics = b.call("GET", "/metrics")
        assert f"extjob_takeovers_total {len(old)}" in metrics, metrics
        # The lost server comes back: it re-adopts nothing that is not its own.
        c.start("a")
        assert (
            c.sql("SELECT count(*) FROM jobs WHERE owner = %s AND status = 'running'", lost_id)[0][
                0
            ]
            == 0
        )
    except BaseException:
        sys.stderr.write(c.logs())
        sys.stderr.write(repr(c.sql("SELECT id, status, attempt, owner, error, run_at FROM jobs")))
        raise


def _replay(path: str, job_id: str, token: str) -> str:
    hello = {
        "type": "hello",
        "jobId": job_id,
        "protocolVersion": PROTOCOL_VERSION,
        "token": token,
        "features": ["replay"],
        "pid": os.getpid(),
        "timestamp": int(time.time() * 1000),
    }
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps(hello).encode() + b"\n")
        s.sendall(
            json.dumps(
                {
                    "type": "completed",
                    "jobId": job_id,
                    "seq": 99,
                    "result": "forged",
                    "timestamp": int(time.time() * 1000),
                }
            ).encode()
            + b"\n"
        )
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _late_write(database: str, owner: str, job_id: str, attempt: int) -> list[bool]:
    import asyncio

    from extjob.server.store import Batch, Finish, NewLog, Record, open_store

    async def main() -> list[bool]:
        store = await open_store(database)
        try:
            late = Batch(logs=[NewLog(1, "info", "late", None, "worker")])
            return await store.write(
                owner,
                [
                    Record(job_id, attempt, 999, late),
                    Finish(job_id, attempt, "completed", 1, result="late"),
                ],
            )
        finally:
            await store.close()

    return asyncio.run(main())


def test_cluster_drill_two_servers_start_at_once_on_an_empty_database(cluster):
    c = cluster()
    first, second = c.start("x", wait=False), c.start("y", wait=False)
    assert isinstance(first, subprocess.Popen) and isinstance(second, subprocess.Popen)
    try:
        x, y = c.ready("x", first), c.ready("y", second)
        from extjob.server.store._schema import POSTGRES

        rows = c.sql("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, len(POSTGRES) + 1))
        job = x.call("POST", "/api/jobs", {"name": "py", "data": {"scenario": "complete"}})
        wait_until(
            lambda: y.call("GET", f"/api/jobs/{job['id']}")["status"] == "completed",
            WAIT,
            "the job",
        )
    except BaseException:
        sys.stderr.write(c.logs())
        raise


def test_cluster_drill_database_restart_under_load_loses_nothing(cluster, pg: PgServer):
    c = cluster(lease_ms=30_000)
    a, b = c.start("a"), c.start("b")
    assert isinstance(a, Node) and isinstance(b, Node)
    data = {"scenario": "logs", "count": 60, "intervalMs": 25}
    ids = [
        (a if i % 2 else b).call(
            "POST", "/api/jobs", {"name": "py" if i % 2 else "go", "data": data}
        )["id"]
        for i in range(40)
    ]
    try:
        wait_until(
            lambda: c.sql("SELECT count(*) FROM logs WHERE job_id = ANY(%s)", ids)[0][0] > 400,
            WAIT,
            "logs to flow",
        )
        pg.restart()  # -m fast: every connection of every server is cut
        wait_until(lambda: _finished(c, ids), WAIT, "every job to finish")
        rows = c.sql("SELECT status, count(*) FROM jobs WHERE id = ANY(%s) GROUP BY 1", ids)
        assert rows == [("completed", 40)], rows
        _check_logs(c, ids, 60)
        # Both servers still serve and still take work after the restart.
        for node in (a, b):
            job_id = node.call("POST", "/api/jobs", {"name": "py", "data": {}})["id"]
            wait_until(
                lambda j=job_id: (
                    c.sql("SELECT status FROM jobs WHERE id = %s", j)[0][0] == "completed"
                ),
                WAIT,
                "a job after the restart",
            )
    except BaseException:
        sys.stderr.write(c.logs())
        raise


def test_cluster_drill_one_api_any_server_cancel_and_events(cluster):
    """Cancel on a server that does not run the job; SSE of another server shows the
    cluster's events live; a stream resumes on a third server with its Last-Event-ID."""
    c = cluster()
    a, b, d = c.start("a"), c.start("b"), c.start("d")
    assert isinstance(a, Node) and isinstance(b, Node) and isinstance(d, Node)
    sys.path.insert(0, str(Path(__file__).parent / "http"))
    from http_helpers import EventStream

    try:
        watch = EventStream(b.url, "/api/events", TOKEN, None)
        job_id = a.call("POST", "/api/jobs", {"name": "py", "data": {"scenario": "cancel"}})["id"]
        # Live on b, whichever server runs it.
        seen = watch.until(
            lambda e: e.name == "job.external.spawned" and e.json()["jobId"] == job_id
        )
        owner = c.sql("SELECT owner FROM jobs WHERE id = %s", job_id)[0][0]
        other = next(n for n in (a, b, d) if c.server_id(n.name) != owner)
        assert other.call("POST", f"/api/jobs/{job_id}/cancel")["id"] == job_id
        wait_until(
            lambda: c.sql("SELECT status FROM jobs WHERE id = %s", job_id)[0][0] == "cancelled",
            30,
            "the cancel to reach the owning server",
        )
        seen += watch.until(lambda e: e.name == "job.cancelled" and e.json()["jobId"] == job_id)
        cluster_id = c.sql("SELECT id FROM cluster")[0][0]
        assert all(e.id is not None and e.id.startswith(f"{cluster_id}-") for e in seen)
        # Events of a second job, then resume the stream on a third server from
        # the last id seen: nothing in between is lost, nothing repeated.
        resume_from = seen[-1].id
        watch.close()
        second = b.call("POST", "/api/jobs", {"name": "py", "data": {"scenario": "complete"}})
        wait_until(
            lambda: (
                c.sql("SELECT status FROM jobs WHERE id = %s", second["id"])[0][0] == "completed"
            ),
            WAIT,
            "the second job",
        )
        resumed = EventStream(d.url, "/api/events", TOKEN, resume_from)
        later = resumed.until(
            lambda e: e.name == "job.completed" and e.json()["jobId"] == second["id"]
        )
        resumed.close()
        numbers = [int(e.id.rpartition("-")[2]) for e in later if e.id]
        assert numbers == list(range(int(resume_from.rpartition("-")[2]) + 1, numbers[-1] + 1))
        assert not any(e.name == "stream.reset" for e in later)
    except BaseException:
        sys.stderr.write(c.logs())
        raise

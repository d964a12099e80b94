"""Helpers for the HTTP API tests: a real ``extjob serve`` process, plain HTTP and SSE.

The helpers use the standard library (urllib, http.client), not the client
under test, so that the API is checked from the outside.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from extjob.client.sse import SseEvent, SseParser

REPO = Path(__file__).resolve().parents[3]
EXTJOB = [sys.executable, "-m", "extjob.cli"]
TOKEN = "test-token-0123456789abcdef"
START_TIMEOUT = 30.0
WAIT = 20.0  # the longest any condition in these tests may take

CONFIG = """
database = "extjob.db"
spool_dir = "spool"
socket_dir = {socket_dir}

[http]
port = 0
token = "{token}"

[jobs.thumbnails]
command = {python}
args = [{thumbnails}]
env = {{ PYTHONPATH = {wrapper} }}
heartbeat_timeout_ms = 3000
cancel_deadline_ms = 3000
kill_grace_ms = 1000

[jobs.crash]
command = "bash"
args = ["-c", "echo boom >&2; exit 3"]

[jobs.later]
command = "bash"
args = ["-c", "exit 0"]

[jobs.v1]
command = {python}
args = [{v1_worker}]

[jobs.silent]
command = {python}
args = [{v1_worker}]
heartbeat_timeout_ms = 4000

[jobs.resumable]
command = {python}
args = [{resumable}]
env = {{ PYTHONPATH = {wrapper} }}
max_attempts = 2
retry_backoff_ms = 10
"""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Any
    body: Any


@dataclass
class Server:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    directory: Path
    config: Path
    streams: list[EventStream] = field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as response:
                return Reply(response.status, response.headers, _decode(response.read()))
        except urllib.error.HTTPError as e:
            return Reply(e.code, e.headers, _decode(e.read()))

    def enqueue(self, name: str, data: Any = None, **options: Any) -> dict[str, Any]:
        reply = self.call("POST", "/api/jobs", {"name": name, "data": data or {}, **options})
        assert reply.status == 201, reply.body
        job: dict[str, Any] = reply.body
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        reply = self.call("GET", f"/api/jobs/{job_id}")
        assert reply.status == 200, reply.body
        job: dict[str, Any] = reply.body
        return job

    def wait_for_status(self, job_id: str, *statuses: str) -> dict[str, Any]:
        return wait_for(lambda: (job := self.job(job_id))["status"] in statuses and job)

    def events(self, path: str, last_event_id: str | None = None) -> EventStream:
        stream = EventStream(self.url, path, self.token, last_event_id)
        self.streams.append(stream)
        return stream


class EventStream:
    """One SSE connection read with deadlines."""

    def __init__(self, url: str, path: str, token: str, last_event_id: str | None) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", path, headers=headers)
        self.response = self.connection.getresponse()
        self.parser = SseParser()
        self.pending: list[SseEvent] = []

    def next(self, timeout: float = WAIT) -> SseEvent:
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no SSE event in time")
            assert self.connection.sock is not None
            self.connection.sock.settimeout(remaining)
            chunk = self.response.read1(65536)
            if not chunk:
                raise EOFError("the server closed the stream")
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)

    def until(self, done: Callable[[SseEvent], bool], timeout: float = WAIT) -> list[SseEvent]:
        """Events up to and including the first for which ``done`` is true."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            event = self.next(deadline - time.monotonic())
            seen.append(event)
            if done(event):
                return seen

    def close(self) -> None:
        self.connection.close()


def wait_for(condition: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll ``condition`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def start_server(
    directory: Path,
    extra_args: tuple[str, ...] = (),
    *,
    settings: str = "",
    jobs: str = "",
    preexec_fn: Callable[[], None] | None = None,
) -> Server:
    """Start ``extjob serve`` and wait for its "listening" line.

    The first start in ``directory`` writes its config: CONFIG, with
    ``settings`` (top-level keys) before it and ``jobs`` (tables) after it.
    ``preexec_fn`` runs in the server process before it starts (to lower its
    limits, say).
    """
    config = directory / "extjob.toml"
    if not config.exists():
        sockets = tempfile.mkdtemp(prefix="xj-")  # short: Unix socket paths are limited
        config.write_text(
            settings
            + CONFIG.format(
                socket_dir=json.dumps(sockets),
                token=TOKEN,
                python=json.dumps(sys.executable),
                thumbnails=json.dumps(str(REPO / "examples" / "python" / "thumbnails.py")),
                wrapper=json.dumps(str(REPO / "wrappers" / "python")),
                v1_worker=json.dumps(str(REPO / "reference_server/tests/workers/v1_worker.py")),
                resumable=json.dumps(str(Path(__file__).parent / "workers" / "resumable.py")),
            )
            + jobs
        )
    with (directory / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [*EXTJOB, "serve", "--config", str(config), *extra_args],
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "EXTJOB_TOKEN": ""},
            preexec_fn=preexec_fn,
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    line = process.stdout.readline().decode() if ready else ""
    if not line.startswith("extjob: listening on "):
        process.kill()
        process.wait()
        raise AssertionError(
            f"server did not start: {line!r}\n{(directory / 'server.log').read_text()}"
        )
    url = line.removeprefix("extjob: listening on ").strip().rstrip("/")
    return Server(url, TOKEN, process, directory, config)


def all_jobs(server: Server, status: str) -> list[dict[str, Any]]:
    """Every job in ``status``, page by page."""
    jobs: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = server.call("GET", f"/api/jobs?status={status}&limit=1000&cursor={cursor}").body
        jobs += page["jobs"]
        cursor = page["nextCursor"]
        if cursor is None:
            return jobs


def stop_server(server: Server) -> None:
    """Stop the server; its workers would outlive it (by design), so end them first."""
    for stream in server.streams:
        stream.close()
    try:
        if server.process.poll() is None:
            for job in all_jobs(server, "running"):
                server.call("POST", f"/api/jobs/{job['id']}/cancel")
            wait_for(
                lambda: server.call("GET", "/api/counts").body["counts"]["running"] == 0,
                timeout=120,  # a thousand of them on a busy machine
            )
    finally:
        server.process.terminate()
        try:
            server.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()

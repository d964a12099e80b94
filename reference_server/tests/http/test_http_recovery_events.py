"""Events a restarted server emits while it recovers reach the event streams too.

``job.lost`` and ``job.failed`` for a worker that died with the server used to
be emitted before the HTTP app subscribed to the server's events: no stream
could ever see them. Now they are numbered like every later event, so a
client that resumes from the start of this server's life gets them.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from http_helpers import start_server, stop_server, wait_for


def test_recovery_events_job_lost_and_job_failed_reach_sse_streams(tmp_path: Path) -> None:
    first = start_server(tmp_path)
    job = first.enqueue("thumbnails", {"steps": 1000, "delayMs": 100})
    running = first.wait_for_status(job["id"], "running")
    wait_for(lambda: first.job(job["id"]).get("pid"))
    pid = first.job(job["id"])["pid"]
    # The server and its worker die together (a machine's OOM killer, say).
    first.process.kill()
    first.process.wait()
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid))
    assert running["status"] == "running"

    again = start_server(tmp_path)
    try:
        assert again.job(job["id"])["status"] == "failed"
        state = again.events(f"/api/jobs/{job['id']}/events").next()
        assert state.name == "job.state" and state.id is not None
        boot = state.id.partition("-")[0]
        stream = again.events("/api/events", last_event_id=f"{boot}-0")
        seen = stream.until(lambda e: e.name == "job.failed")
        names = [(e.name, e.json()["jobId"]) for e in seen]
        assert ("job.lost", job["id"]) in names
        assert names[-1] == ("job.failed", job["id"])
    finally:
        stop_server(again)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True

"""``--follow``: a live progress bar, the latest message and the log lines of a job."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from .api import ApiClient

FINISHED = ("completed", "failed", "cancelled")
# Events after which the job may have reached its end (a failed attempt may
# also be retried): the client then asks for the job's state.
_MAYBE_FINAL = ("job.completed", "job.failed", "job.cancelled", "job.lost")
BAR_WIDTH = 30


class ProgressView:
    """Draws one job's progress: a redrawn bar on a terminal, plain lines elsewhere."""

    def __init__(self, out: TextIO = sys.stdout, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.label = ""
        self.percent = 0.0
        self.message = ""
        self.status = "pending"
        self._printed: tuple[int, str, str] | None = None

    def state(self, job: dict[str, Any]) -> None:
        self.label = f"{job['name']} {job['id']}"
        self.status = job["status"]
        progress = job.get("progress") or {}
        if progress.get("percent") is not None:
            self.percent = float(progress["percent"])
        if progress.get("message") is not None:
            self.message = progress["message"]
        self._draw()

    def progress(self, percent: float, message: str | None) -> None:
        if self.status not in FINISHED:  # a replayed message may come after the end
            self.status = "running"
        self.percent = percent
        if message is not None:  # MSG-4: a missing message leaves the previous one standing
            self.message = message
        self._draw()

    def note(self, text: str) -> None:
        """A line above the bar (a log line, a reconnect)."""
        if self.tty:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        self._draw()

    def finish(self, job: dict[str, Any]) -> None:
        self.state(job)
        if self.tty:
            self.out.write("\n")
        outcome = {
            "completed": f"completed: {json.dumps(job.get('result'))}",
            "failed": f"failed: {job.get('error')}",
            "cancelled": "cancelled",
        }[job["status"]]
        self.out.write(f"{self.label} {outcome}\n")
        self.out.flush()

    def _draw(self) -> None:
        filled = round(BAR_WIDTH * max(0.0, min(self.percent, 100.0)) / 100)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        line = f"{self.label} [{bar}] {self.percent:5.1f}% {self.status:<9} {self.message}"
        if self.tty:
            self.out.write("\r\x1b[2K" + line)
        else:
            key = (int(self.percent), self.status, self.message)
            if key == self._printed:
                return
            self._printed = key
            self.out.write(line + "\n")
        self.out.flush()


async def follow(
    api: ApiClient, job_id: str, view: ProgressView | None, logs: bool
) -> dict[str, Any]:
    """Show a job until it ends; returns its final state.

    With ``view`` None the events are printed as JSON lines (``--json``).
    """
    async for event in api.events(job_id):
        data = event.json()
        if view is None:
            print(json.dumps({"event": event.name, "id": event.id, "data": data}), flush=True)
        if event.name == "job.state":
            if view is not None:
                view.state(data)
            if data["status"] in FINISHED:
                return _finished(view, data)
        elif event.name == "job.external.progress" and view is not None:
            view.progress(data.get("percent") or 0.0, data.get("message"))
        elif event.name == "job.external.log" and view is not None and logs:
            view.note(f"  [{data.get('level', 'info')}] {data.get('message', '')}")
        elif event.name in ("job.stale", "job.reconnected") and view is not None:
            view.note(f"  ({event.name.removeprefix('job.')})")
        elif event.name in _MAYBE_FINAL:
            job = await api.get(job_id)
            if job["status"] in FINISHED:
                return _finished(view, job)
    raise AssertionError("the event stream never ends by itself")


def _finished(view: ProgressView | None, job: dict[str, Any]) -> dict[str, Any]:
    if view is not None:
        view.finish(job)
    return job

"""``extjob demo``: an example job per language survives a server restart.

It writes a config for the example jobs in ``examples/`` (one per language
in ``EXAMPLES`` whose toolchain is installed, each on its wrapper), starts
``extjob serve`` on the embedded SQLite store, enqueues one job of each,
shows their progress side by side, stops the server in the middle (the
workers keep running) and starts it again (they reconnect and finish). The
dashboard shows the same jobs live. A language whose toolchain is missing is
skipped with a line saying what would add it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .api import ApiClient, ApiError, Target
from .follow import BAR_WIDTH, FINISHED

RESTART_AT_PERCENT = 40.0
SERVER_START_SECONDS = 30.0
CANCEL_WAIT_SECONDS = 15.0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo", help="run an example job per language through a server restart"
    )
    p.add_argument(
        "--port",
        type=int,
        default=8765,
        help="the API/dashboard port (default 8765; 0: any free one)",
    )
    p.add_argument("--steps", type=int, default=20, help="steps per job (default 20)")
    p.add_argument("--delay-ms", type=int, default=400, help="time per step (default 400)")
    p.add_argument("--dir", help="keep the demo's database and logs here (default: temporary)")
    p.add_argument(
        "--exit-when-done", action="store_true", help="stop instead of serving the dashboard on"
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except DemoError as e:
        print(f"extjob demo: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class DemoError(Exception):
    """Something the demo needs is missing; the message says what."""


@dataclass
class _Server:
    """``extjob serve`` as a child process."""

    config: Path
    log: Path
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "extjob.cli", "serve", "--config", str(self.config),
                stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), SERVER_START_SECONDS)
        except TimeoutError:
            line = b""
        if not line.startswith(b"extjob: listening on"):
            await self.stop()
            raise DemoError(f"the server did not start; see {self.log}")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def _demo(args: argparse.Namespace) -> int:
    root = _source_root()
    with contextlib.ExitStack() as cleanup:
        work = (
            Path(args.dir)
            if args.dir
            else Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="extjob-demo-")))
        )
        work.mkdir(parents=True, exist_ok=True)
        # Unix socket paths are short (108 bytes): keep them out of a deep --dir.
        sockets = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="extjob-"))
        jobs, skipped = await _job_definitions(root, work)
        port = args.port if args.port and _port_free(args.port) else _free_port()
        token = secrets.token_hex(16)
        config = work / "extjob.toml"
        config.write_text(_config_text(jobs, work, sockets, port, token))
        server = _Server(config, work / "server.log")
        await server.start()
        try:
            url = f"http://127.0.0.1:{port}"
            print(f"dashboard: {url}/#token={token}")
            print(f"API token: {token}   (server log: {server.log})\n", flush=True)
            async with ApiClient(Target(url, token)) as api:
                outcome = await _run_jobs(api, server, list(jobs), args)
                for line in skipped:  # again, where the summary is read
                    print(line)
                if not args.exit_when_done:
                    print(f"\nThe server keeps running for the dashboard: {url}/#token={token}")
                    print("Press Ctrl-C to stop.", flush=True)
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.Event().wait()
            return outcome
        finally:
            await server.stop()


async def _run_jobs(
    api: ApiClient, server: _Server, names: list[str], args: argparse.Namespace
) -> int:
    data = {"steps": args.steps, "delayMs": args.delay_ms}
    jobs = {}
    for name in names:
        job = await api.enqueue(name, data)
        jobs[job["id"]] = job
    board = _Board(sys.stdout, jobs)
    restarted = False
    events = api.events()
    try:
        async for event in events:
            body = event.json()
            job_id = body.get("jobId")
            if event.name == "stream.reset":  # the server restarted: read everything again
                for known in jobs:
                    board.update(await api.get(known))
            elif job_id in jobs:
                if event.name == "job.external.progress":
                    board.progress(job_id, body.get("percent") or 0.0, body.get("message"))
                elif event.name == "job.external.log":
                    board.note(f"{jobs[job_id]['name']}: {body.get('message', '')}")
                else:
                    board.update(await api.get(job_id))
            if board.all_finished():
                break
            if not restarted and board.min_percent() >= RESTART_AT_PERCENT:
                restarted = True
                board.note("stopping the server: the workers keep running...")
                down = time.monotonic()
                await server.stop()
                await server.start()
                board.note(
                    f"server back after {time.monotonic() - down:.1f} s: "
                    "the workers reconnect and replay what it missed"
                )
    finally:
        await events.aclose()
        if not board.all_finished():  # interrupted: workers outlive a server stop
            await _cancel(api, list(jobs))
    board.summary()
    return 0 if board.all_completed() else 1


async def _cancel(api: ApiClient, job_ids: list[str]) -> None:
    """Cancel the jobs and wait (a little) for their workers to end."""
    with contextlib.suppress(ApiError):
        for job_id in job_ids:
            with contextlib.suppress(ApiError):
                await api.cancel(job_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < deadline:
            states = [(await api.get(job_id))["status"] for job_id in job_ids]
            if all(state in FINISHED for state in states):
                return
            await asyncio.sleep(0.2)


class _Board:
    """One progress bar per job, redrawn in place on a terminal."""

    def __init__(self, out: TextIO, jobs: dict[str, dict[str, Any]]) -> None:
        self.out = out
        self.tty = out.isatty()
        self.jobs = jobs
        self.percent = dict.fromkeys(jobs, 0.0)
        self.message = dict.fromkeys(jobs, "")
        self._drawn = False
        self._printed: dict[str, int] = {}
        self._draw()

    def progress(self, job_id: str, percent: float, message: str | None) -> None:
        self.percent[job_id] = percent
        if message is not None:
            self.message[job_id] = message
        if self.jobs[job_id]["status"] not in FINISHED:  # replays come after the end
            self.jobs[job_id] = {**self.jobs[job_id], "status": "running"}
        self._draw()

    def update(self, job: dict[str, Any]) -> None:
        self.jobs[job["id"]] = job
        progress = job.get("progress") or {}
        if progress.get("percent") is not None:
            self.percent[job["id"]] = progress["percent"]
        if progress.get("message"):
            self.message[job["id"]] = progress["message"]
        self._draw()

    def note(self, text: str) -> None:
        self._erase()
        self.out.write(f"  {text}\n")
        self._draw()

    def min_percent(self) -> float:
        return min(self.percent.values())

    def all_finished(self) -> bool:
        return all(job["status"] in FINISHED for job in self.jobs.values())

    def all_completed(self) -> bool:
        return all(job["status"] == "completed" for job in self.jobs.values())

    def summary(self) -> None:
        self.out.write("\n")
        for job in self.jobs.values():
            outcome = (
                json.dumps(job.get("result")) if job["status"] == "completed" else job.get("error")
            )
            self.out.write(f"{job['name']:<11} {job['status']:<9} {outcome}\n")
        self.out.flush()

    def _line(self, job_id: str) -> str:
        job = self.jobs[job_id]
        filled = round(BAR_WIDTH * min(self.percent[job_id], 100.0) / 100)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        return (
            f"{job['name']:<11} [{bar}] {self.percent[job_id]:5.1f}% "
            f"{job['status']:<9} {self.message[job_id]}"
        )

    def _erase(self) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{len(self.jobs)}F\x1b[J")
            self._drawn = False

    def _draw(self) -> None:
        if self.tty:
            self._erase()
            self.out.write("".join(self._line(job_id) + "\n" for job_id in self.jobs))
            self._drawn = True
        else:  # a log or a pipe: one line per job each time it passes a tenth
            for job_id, job in self.jobs.items():
                step = int(self.percent[job_id] // 10) + (job["status"] in FINISHED)
                if self._printed.get(job_id) != step:
                    self._printed[job_id] = step
                    self.out.write(self._line(job_id) + "\n")
        self.out.flush()


def _source_root() -> Path:
    """The extjob checkout whose examples/ and wrappers/ the demo runs."""
    for candidate in (Path.cwd(), Path(__file__).resolve().parents[3]):
        if (candidate / "examples" / "python" / "thumbnails.py").is_file():
            return candidate
    raise DemoError("run extjob demo from the extjob source checkout (examples/ not found)")


@dataclass(frozen=True)
class Example:
    """One language's example job in ``examples/``: what it needs, how it runs.

    ``needs`` lists tools that must all be on PATH; an entry ``"a|b c"``
    is met by ``a`` alone or by ``b`` and ``c`` together. ``build`` (optional)
    returns a command and its directory that make what ``job`` runs.
    ``install`` is the one command that adds the missing tools.
    """

    language: str
    name: str  # the job's name in the demo's config
    needs: tuple[str, ...]
    install: str
    job: Callable[[Path, Path], dict[str, Any]]  # (source root, work dir) -> job table
    build: Callable[[Path, Path], tuple[list[str], Path]] | None = None

    def missing(self) -> str | None:
        """Names what is missing, or None when the example can run."""
        for need in self.needs:
            choices = [option.split() for option in need.split("|")]
            if not any(all(shutil.which(tool) for tool in tools) for tools in choices):
                return " or ".join(" and ".join(tools) for tools in choices)
        return None


# The demo's languages, in the order their progress bars appear. Adding a
# language is one entry here (and its example in examples/).
EXAMPLES: tuple[Example, ...] = (
    Example(
        language="Python",
        name="thumbnails",
        needs=(),
        install="",
        job=lambda root, work: {
            "command": sys.executable,
            "args": [str(root / "examples" / "python" / "thumbnails.py")],
            "env": {"PYTHONPATH": str(root / "wrappers" / "python")},
        },
    ),
    Example(
        language="bash",
        name="backup",
        # The wrapper connects with python3, or with socat (and jq) without it.
        needs=("bash", "python3|socat jq"),
        install="sudo apt-get install bash python3",
        job=lambda root, work: {
            "command": "bash",
            "args": [str(root / "examples" / "shell" / "backup.sh")],
        },
    ),
    Example(
        language="Go",
        name="checksum",
        needs=("go",),
        install="sudo apt-get install golang-go",
        build=lambda root, work: (
            ["go", "build", "-o", str(work / "checksum"), "."],
            root / "examples" / "go",
        ),
        job=lambda root, work: {"command": str(work / "checksum")},
    ),
    Example(
        language="Rust",
        name="wordcount",
        needs=("cargo",),
        install="curl -sSf https://sh.rustup.rs | sh",
        build=lambda root, work: (["cargo", "build", "--quiet", "--locked"], _rust_example(root)),
        job=lambda root, work: {"command": str(_cargo_target(root) / "debug" / "wordcount")},
    ),
    Example(
        language="TypeScript",
        name="transcode",
        needs=("node", "npm"),
        install="sudo apt-get install nodejs npm",
        # @extjob/worker into the example's node_modules, then the example (npm ci brings tsc).
        build=lambda root, work: (["node", "build.mjs"], _typescript_example(root)),
        job=lambda root, work: {
            "command": shutil.which("node") or "node",
            "args": [str(_typescript_example(root) / "dist" / "transcode.js")],
        },
    ),
)


def _typescript_example(root: Path) -> Path:
    return root / "examples" / "typescript"


def _rust_example(root: Path) -> Path:
    return root / "examples" / "rust"


def _cargo_target(root: Path) -> Path:
    """Where cargo puts the Rust example's build (it honours CARGO_TARGET_DIR)."""
    return _rust_example(root) / os.environ.get("CARGO_TARGET_DIR", "target")


async def _job_definitions(root: Path, work: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The job table of every example whose toolchain is here (built if it
    needs building), and a line for each one skipped: why, and what adds it."""
    jobs: dict[str, dict[str, Any]] = {}
    skipped = []
    for example in EXAMPLES:
        missing = example.missing()
        if missing is not None:
            skipped.append(
                f"skipped the {example.language} job: {missing} not installed;"
                f" add it with: {example.install}"
            )
            print(f"({skipped[-1]})")
            continue
        if example.build is not None:
            await _build(example, *example.build(root, work))
        jobs[example.name] = example.job(root, work)
    return jobs, skipped


async def _build(example: Example, command: list[str], cwd: Path) -> None:
    print(f"building the {example.language} example...", flush=True)
    build = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await build.communicate()
    if build.returncode != 0:
        raise DemoError(
            f"building the {example.language} example ({' '.join(command)} in {cwd}) failed:\n"
            f"{output.decode(errors='replace')}"
        )


def _config_text(
    jobs: dict[str, dict[str, Any]], work: Path, sockets: str, port: int, token: str
) -> str:
    lines = [
        f"database = {json.dumps(str(work / 'extjob.db'))}",
        f"socket_dir = {json.dumps(sockets)}",
        f"spool_dir = {json.dumps(str(work / 'spool'))}",
        "",
        "[http]",
        f"port = {port}",
        f"token = {json.dumps(token)}",
    ]
    for name, spec in jobs.items():
        lines += ["", f"[jobs.{name}]"]
        for key, value in spec.items():
            if isinstance(value, dict):
                pairs = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
                lines.append(f"{key} = {{ {pairs} }}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")  # JSON strings and lists are TOML
    return "\n".join(lines) + "\n"


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    # The same port must serve both runs of the server (the dashboard
    # reconnects to it), so it is chosen once here rather than by the server.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port

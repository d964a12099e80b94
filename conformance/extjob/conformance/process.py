"""The worker under test as a real child process.

It gets its payload on standard input (PAY-1) and runs in its own process
group, so that the harness can always kill it and anything it started. Its
standard output and error go to files: the report shows them, and FIX-3
forbids anything on standard output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from .transcript import Transcript


class WorkerProcess:
    """A spawned worker; ``returncode`` and ``exited_at`` once it has exited."""

    def __init__(self, process: asyncio.subprocess.Process, directory: Path, spawned_at: float):
        self.process = process
        self.spawned_at = spawned_at  #: transcript time just before the spawn
        self.pid = process.pid
        self.directory = directory
        self.returncode: int | None = None
        self.exited_at: float | None = None  #: transcript time of the exit
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls,
        command: Sequence[str],
        stdin: bytes,
        env: Mapping[str, str],
        directory: Path,
        transcript: Transcript,
        on_exit: Callable[[], Awaitable[None]],
        streams: str = "files",
    ) -> WorkerProcess:
        """``streams``: ``files`` (read for the report), ``closed`` (no descriptors
        1 and 2) or ``broken`` (pipes nobody reads: writes fail), for WRAP-5."""
        spawned_at = transcript.now()
        if streams == "closed":
            command = ["sh", "-c", 'exec "$@" >&- 2>&-', "sh", *command]
        with open(directory / "stdout", "wb") as out, open(directory / "stderr", "wb") as err:
            broken = os.pipe() if streams == "broken" else None
            if broken is not None:
                os.close(broken[0])
            try:
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=out if broken is None else broken[1],
                    stderr=err if broken is None else broken[1],
                    env=dict(env),
                    start_new_session=True,  # its own process group (SRV-8)
                )
            finally:
                if broken is not None:
                    os.close(broken[1])
        worker = cls(process, directory, spawned_at)
        transcript.event(f"spawned pid {process.pid}: {len(stdin)} bytes on stdin")
        assert process.stdin is not None
        with contextlib.suppress(ConnectionError):  # a worker may exit without reading
            process.stdin.write(stdin)
            await process.stdin.drain()
        process.stdin.close()
        worker._watcher = asyncio.get_running_loop().create_task(worker._watch(transcript, on_exit))
        return worker

    async def _watch(self, transcript: Transcript, on_exit: Callable[[], Awaitable[None]]) -> None:
        code = await self.process.wait()
        self.returncode = code
        self.exited_at = transcript.now()
        how = f"signal {-code}" if code < 0 else f"status {code}"
        transcript.event(f"process exited with {how}")
        await on_exit()

    @property
    def exited(self) -> bool:
        return self.returncode is not None

    def kill(self) -> None:
        """SIGKILL the whole process group (stragglers included)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def wait_exit(self, timeout_s: float) -> bool:
        """Wait until the exit is recorded; False if ``timeout_s`` passed first."""
        assert self._watcher is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._watcher), timeout_s)
        return self.exited

    def stdout(self) -> bytes:
        return (self.directory / "stdout").read_bytes()

    def stderr(self) -> bytes:
        return (self.directory / "stderr").read_bytes()

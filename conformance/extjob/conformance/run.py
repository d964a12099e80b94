"""One case, end to end: listen, spawn, drive, collect, judge.

Each case gets its own directory, socket, job id and token, so cases are
independent and can run in parallel. The case's ``drive`` coroutine injects
faults while the worker runs; everything is judged afterwards from the
recorded transcript, the exit status and the files the worker left.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from extjob.protocol import DEFAULT_MAX_LINE_BYTES, PROTOCOL_VERSION, Message, encode

from .fakeserver import Connection, FakeServer
from .model import ERROR, CaseResult, Timing, worst
from .process import WorkerProcess
from .transcript import Entry, Transcript

if TYPE_CHECKING:
    from .cases import Case

#: The environment variables of ENV-1; the harness controls all of them.
ENV_VARS = (
    "EXTJOB_JOB_ID", "EXTJOB_JOB_NAME", "EXTJOB_SOCKET_PATH",
    "DONKEYLABS_JOB_ID", "DONKEYLABS_JOB_NAME", "DONKEYLABS_SOCKET_PATH", "DONKEYLABS_TCP_PORT",
)  # fmt: skip
JOB_NAME = "conformance"


@dataclass
class Run:
    """Everything a case's drive and checks can see."""

    case: Case
    timing: Timing
    extended: bool  #: the payload offers extensions (else the harness is a v1 server)
    offered: tuple[str, ...]
    transcript: Transcript
    server: FakeServer
    directory: Path
    job_id: str
    token: str
    payload: dict[str, Any] = field(default_factory=dict)
    worker: WorkerProcess | None = None
    spawned_wall_ms: int = 0
    notes: dict[str, Any] = field(default_factory=dict)  #: what a drive observed

    @property
    def spool_path(self) -> Path:
        return self.directory / "spool" / "attempt-1.ndjson"

    # -- views of the transcript ---------------------------------------------

    def messages(self, *types: str) -> list[Message]:
        return [e.message for e in self.entries(*types) if e.message is not None]

    def entries(self, *types: str) -> list[Entry]:
        return [
            e for e in self.transcript.messages()
            if not types or (e.message is not None and e.message.type in types)
        ]  # fmt: skip

    def terminal(self) -> Entry | None:
        return next((e for e in self.entries("completed", "failed")), None)

    # -- waiting, for drives -------------------------------------------------

    async def until(self, predicate: Callable[[], bool], seconds: float) -> bool:
        """Wait for a condition, ``seconds`` scaled by the time factor."""
        return await self.server.wait_for(predicate, self.timing.s(seconds))

    async def until_type(self, type_: str, seconds: float = 5.0) -> bool:
        return await self.until(lambda: bool(self.entries(type_)), seconds)

    async def until_welcomed(self, seconds: float = 5.0) -> Connection | None:
        """The newest connection once it has been welcomed (extended) or opened."""

        def ready() -> bool:
            conn = self.server.current()
            return conn is not None and (not self.extended or conn.welcomed_at is not None)

        return self.server.current() if await self.until(ready, seconds) else None

    async def until_exit(self, seconds: float) -> bool:
        assert self.worker is not None
        return await self.worker.wait_exit(self.timing.s(seconds))

    async def until_exit_or_budget(self) -> bool:
        """Wait for the exit, as long as the case allows plus what its scenario sleeps."""
        sleeps_ms = self.case.data_for(self.timing).get("ms", 0)
        return await self.until_exit(self.case.budget_s + sleeps_ms / 1000)


def _payload(run: Run, socket_path: str) -> dict[str, Any]:
    timing = run.timing
    payload: dict[str, Any] = {
        "jobId": run.job_id,
        "name": JOB_NAME,
        "data": run.case.data_for(timing),
        "socketPath": socket_path,
        "heartbeatIntervalMs": timing.advised_interval_ms,
        "heartbeatTimeoutMs": timing.heartbeat_timeout_ms,
        "reconnectWindowMs": run.case.reconnect_window_ms,
        "x-conformance-case": run.case.id,  # PAY-5: an unknown field to ignore
    }
    if run.extended:
        payload |= {
            "protocolVersion": PROTOCOL_VERSION,
            "features": list(run.offered),
            "maxLineBytes": DEFAULT_MAX_LINE_BYTES,
            "token": run.token,
            "attempt": 1,
            "maxAttempts": 1,
            "spoolPath": str(run.spool_path),
        }
    payload |= run.case.payload_extra
    return payload


def _environment(run: Run, payload: dict[str, Any], port: int) -> tuple[bytes, dict[str, str]]:
    """The worker's stdin and environment for the case's ``stdin`` mode (PAY, ENV)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env |= dict.fromkeys(ENV_VARS, "")
    tcp = payload["socketPath"].startswith("tcp://")
    ids = {"JOB_ID": run.job_id, "JOB_NAME": JOB_NAME, "SOCKET_PATH": payload["socketPath"]}
    mode = run.case.stdin
    if mode in ("payload", "env", "malformed"):  # PAY-6: no env fallback for bad JSON
        env |= {f"EXTJOB_{k}": v for k, v in ids.items()}
    if mode in ("payload", "env", "env-donkeylabs"):
        env |= {f"DONKEYLABS_{k}": v for k, v in ids.items()}
    if mode == "env-tcp-port":
        env |= {"EXTJOB_JOB_ID": run.job_id, "EXTJOB_JOB_NAME": JOB_NAME}
    if tcp and mode != "missing":
        env["DONKEYLABS_TCP_PORT"] = str(port)
    stdin = {
        "payload": encode(payload),
        "malformed": b'{"jobId": "' + run.job_id.encode() + b'", "name": \n',
    }.get(mode, b"")
    return stdin, env


async def run_case(
    case: Case, command: Sequence[str], features: frozenset[str], timing: Timing
) -> CaseResult:
    """Run one case against ``command``; harness faults become ERROR, not FAIL."""
    started = time.monotonic()
    result = CaseResult(case.id, case.title, case.feature, case.requirements, ERROR)
    with tempfile.TemporaryDirectory(prefix="ejc-") as tmp:
        directory = Path(tmp)
        (directory / "spool").mkdir(mode=0o700)  # SPOOL-1
        transcript = Transcript()
        extended = bool(case.requires)
        offered = tuple(f for f in case.offer(features))
        job_id = f"conf-{secrets.token_hex(4)}"
        server = FakeServer(
            transcript, job_id, offered=offered,
            heartbeat_interval_ms=timing.advised_interval_ms, max_line_bytes=DEFAULT_MAX_LINE_BYTES,
        )  # fmt: skip
        run = Run(
            case,
            timing,
            extended,
            offered,
            transcript,
            server,
            directory,
            job_id,
            token=secrets.token_urlsafe(24),
        )
        stalls = asyncio.get_running_loop().create_task(transcript.watch_stalls())
        try:
            if case.transport == "tcp":
                await server.listen_tcp()
            else:
                await server.listen_unix(str(directory / "job.sock"))
            run.payload = _payload(run, server.address)
            stdin, env = _environment(run, run.payload, server.port)
            run.spawned_wall_ms = time.time_ns() // 1_000_000
            run.worker = await WorkerProcess.spawn(
                command, stdin, env, directory, transcript, server.notify
            )
            await case.drive(run)  # returns once the worker exited or its budget ran out
            if run.worker.exited:  # judge only once every line it wrote is read (EXIT-1)
                server.reading.set()
                await server.wait_for(
                    lambda: not any(c.open for c in server.connections), timing.s(3)
                )
            result.findings = [f for check in case.all_checks() for f in check(run)]
            result.verdict = worst(result.findings)
        except Exception:  # a fault of the harness, reported as such
            result.reason = traceback.format_exc()
        finally:
            stalls.cancel()
            if run.worker is not None:
                run.worker.kill()
                await run.worker.wait_exit(timing.s(2))
                result.stderr = run.worker.stderr().decode(errors="replace")
            await server.stop("case over")
            result.transcript = transcript.render()
    result.duration_s = time.monotonic() - started
    return result

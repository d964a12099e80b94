"""One case, end to end: listen, spawn, drive, collect, judge.

Each case gets its own directory, socket, job id and token, so cases are
independent and can run in parallel. The case's ``drive`` coroutine injects
faults while the worker runs; everything is judged afterwards from the
recorded transcript, the exit status and the files the worker left.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from extjob.protocol import (
    DEFAULT_MAX_LINE_BYTES,
    ENV_TCP_PORT,
    ENV_VARS,
    Extensions,
    LocalProtocolError,
    Message,
    build_payload,
    encode,
    payload_environment,
)

from .fakeserver import Connection, FakeServer
from .model import ERROR, CaseResult, Finding, Timing, worst
from .process import WorkerProcess
from .transcript import Entry, Transcript

JOB_NAME = "conformance"


class CaseSpec(Protocol):
    """What running a case needs of it (``cases.Case`` is one). A protocol, so
    that this module need not import the catalogue, which imports it."""

    @property
    def id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def feature(self) -> str: ...
    @property
    def requirements(self) -> tuple[str, ...]: ...
    @property
    def requires(self) -> tuple[str, ...]: ...
    @property
    def stdin(self) -> str: ...
    @property
    def transport(self) -> str: ...
    @property
    def streams(self) -> str: ...
    @property
    def timed(self) -> bool: ...
    @property
    def withhold_acks(self) -> bool: ...
    @property
    def budget_s(self) -> float: ...
    @property
    def reconnect_window_ms(self) -> int: ...
    @property
    def payload_extra(self) -> Mapping[str, Any]: ...
    @property
    def drive(self) -> Callable[[Run], Awaitable[None]]: ...
    def data_for(self, timing: Timing) -> Mapping[str, Any]: ...
    def offer(self, claimed: frozenset[str]) -> tuple[str, ...]: ...
    def all_checks(self) -> tuple[Callable[[Run], Iterable[Finding]], ...]: ...


@dataclass
class Run:
    """Everything a case's drive and checks can see."""

    case: CaseSpec
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
    """The core's payload (PAY-2, PAY-3 when extended), plus what the case adds."""
    extensions = None
    if run.extended:
        extensions = Extensions(
            token=run.token,
            spool_path=str(run.spool_path),
            features=run.offered,
            max_line_bytes=DEFAULT_MAX_LINE_BYTES,
        )
    payload = build_payload(
        run.job_id,
        JOB_NAME,
        run.case.data_for(run.timing),
        socket_path,
        heartbeat_timeout_ms=run.timing.heartbeat_timeout_ms,
        reconnect_window_ms=run.case.reconnect_window_ms,
        extensions=extensions,
    )
    payload["x-conformance-case"] = run.case.id  # PAY-5: an unknown field to ignore
    payload |= run.case.payload_extra
    return payload


_EXTJOB = tuple(v for v in ENV_VARS if v.startswith("EXTJOB_"))
#: The case's ``stdin`` mode -> the ENV-1 variables the harness sets (ENV-2).
_ENV_SETS = {
    "payload": ENV_VARS,
    # ENV-2: EXTJOB_* first; the DONKEYLABS_* beside them name another job
    "env": _EXTJOB,
    "partial": _EXTJOB,
    # PAY-6: a malformed stdin is an error even with the environment set
    "malformed": (*_EXTJOB, ENV_TCP_PORT),
    "not-object": (*_EXTJOB, ENV_TCP_PORT),
    "env-donkeylabs": tuple(v for v in ENV_VARS if v.startswith("DONKEYLABS_")),
    "env-tcp-port": ("EXTJOB_JOB_ID", "EXTJOB_JOB_NAME", ENV_TCP_PORT),
    "missing": (),
}


def _environment(run: Run, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The worker's stdin and environment for the case's ``stdin`` mode (PAY, ENV)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env |= dict.fromkeys(ENV_VARS, "")  # ENV-1: a variable that does not apply is empty
    chosen = payload_environment(payload)
    env |= {name: chosen[name] for name in _ENV_SETS[run.case.stdin]}
    if run.case.stdin in ("env", "partial"):  # wrong, so that reading them first shows
        wrong = payload_environment({**payload, "jobId": "wrong-job", "name": "wrong-name"})
        wrong["DONKEYLABS_SOCKET_PATH"] = str(run.directory / "wrong.sock")
        env |= {k: v for k, v in wrong.items() if k.startswith("DONKEYLABS_") and k != ENV_TCP_PORT}
    partial = {k: v for k, v in payload.items() if k not in ("jobId", "socketPath")}
    stdin = {
        "payload": _encode_payload(payload),
        "partial": _encode_payload(partial),  # ENV-2: the missing fields from EXTJOB_*
        "malformed": b'{"jobId": "' + run.job_id.encode() + b'", "name": \n',
        "not-object": b'["' + run.job_id.encode() + b'"]\n',
    }.get(run.case.stdin, b"")
    return stdin, env


def _encode_payload(payload: dict[str, Any]) -> bytes:
    """The payload line; a lone surrogate in the data goes as a JSON escape, as the
    original's JSON.stringify writes it (FRAME-2 says what the worker does with it)."""
    try:
        return encode(payload)
    except LocalProtocolError:
        return (json.dumps(payload, ensure_ascii=True) + "\n").encode()


def _judge(case: CaseSpec, run: Run) -> list[Finding]:
    return [f for check in case.all_checks() for f in check(run)]


async def run_case(
    case: CaseSpec, command: Sequence[str], features: frozenset[str], timing: Timing
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
        token = secrets.token_urlsafe(24)
        server = FakeServer(
            transcript, job_id, token, offered=offered,
            heartbeat_timeout_ms=timing.heartbeat_timeout_ms,
            max_line_bytes=DEFAULT_MAX_LINE_BYTES,
        )  # fmt: skip
        run = Run(case, timing, extended, offered, transcript, server, directory, job_id, token)
        stalls = asyncio.get_running_loop().create_task(transcript.watch_stalls())
        try:
            if case.transport == "tcp":
                await server.listen_tcp()
            else:
                await server.listen_unix(str(directory / "job.sock"))
            run.payload = _payload(run, server.address)
            stdin, env = _environment(run, run.payload)
            run.spawned_wall_ms = time.time_ns() // 1_000_000
            run.worker = await WorkerProcess.spawn(
                command, stdin, env, directory, transcript, server.notify, case.streams
            )
            await case.drive(run)  # returns once the worker exited or its budget ran out
            if run.worker.exited:  # judge only once every line it wrote is read (EXIT-1)
                server.reading.set()
                await server.wait_for(
                    lambda: not any(c.open for c in server.connections), timing.s(3)
                )
            # In a thread: a big case's checks take a while, and the other
            # cases' timing must not wait for them on this event loop.
            result.findings = await asyncio.to_thread(_judge, case, run)
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

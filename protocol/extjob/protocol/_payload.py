"""What a server hands a worker at spawn: the payload and the environment.

PAY-2/PAY-3 and ENV-1, made in one place for the reference server and the
conformance harness; ``protocol/tests`` checks every payload made here
against ``schema/payload.schema.json``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._features import FEATURES
from ._timing import PROTOCOL_VERSION, heartbeat_interval_ms

#: ENV-1: payload field -> the variables that carry it (EXTJOB_ first: ENV-2
#: reads them in this order).
ENV_NAMES: dict[str, tuple[str, str]] = {
    "jobId": ("EXTJOB_JOB_ID", "DONKEYLABS_JOB_ID"),
    "name": ("EXTJOB_JOB_NAME", "DONKEYLABS_JOB_NAME"),
    "socketPath": ("EXTJOB_SOCKET_PATH", "DONKEYLABS_SOCKET_PATH"),
}
#: ENV-1: the port of a ``tcp://`` socketPath, else empty.
ENV_TCP_PORT = "DONKEYLABS_TCP_PORT"
#: Every variable of ENV-1.
ENV_VARS: tuple[str, ...] = (*(n for names in ENV_NAMES.values() for n in names), ENV_TCP_PORT)
#: Variable prefixes of the protocol: a server never passes its own (ENV-3).
ENV_PREFIXES = ("EXTJOB_", "DONKEYLABS_")

_NO_CHECKPOINT = object()


@dataclass(frozen=True)
class Extensions:
    """The PAY-3 fields of one attempt, for a server that offers extensions."""

    token: str
    spool_path: str  # the attempt's own (SPOOL-1)
    attempt: int = 1
    max_attempts: int = 1
    features: Sequence[str] = FEATURES  #: offered (NEG-1), unknown names included
    max_line_bytes: int = 16 * 1024 * 1024


def build_payload(
    job_id: str,
    name: str,
    data: Any,
    socket_path: str,
    *,
    heartbeat_timeout_ms: int,
    reconnect_window_ms: int,
    extensions: Extensions | None,
    checkpoint: Any = _NO_CHECKPOINT,
) -> dict[str, Any]:
    """PAY-2, plus PAY-3 when ``extensions`` is given (None: a v1 server).

    The heartbeat interval is derived from the timeout (HB-1), so the two
    cannot disagree. ``checkpoint`` is passed only when there is one (CKPT-2).
    """
    payload: dict[str, Any] = {
        "jobId": job_id,
        "name": name,
        "data": data,
        "socketPath": socket_path,
        "heartbeatIntervalMs": heartbeat_interval_ms(heartbeat_timeout_ms),
        "heartbeatTimeoutMs": heartbeat_timeout_ms,
        "reconnectWindowMs": reconnect_window_ms,
    }
    if extensions is not None:
        payload |= {
            "protocolVersion": PROTOCOL_VERSION,
            "features": list(extensions.features),
            "maxLineBytes": extensions.max_line_bytes,
            "token": extensions.token,  # only here, never in the environment (ENV-3)
            "attempt": extensions.attempt,
            "maxAttempts": extensions.max_attempts,
            "spoolPath": extensions.spool_path,
        }
        if checkpoint is not _NO_CHECKPOINT and checkpoint is not None:
            payload["checkpoint"] = checkpoint
    return payload


def payload_environment(payload: Mapping[str, Any]) -> dict[str, str]:
    """ENV-1: the variables a server sets for the worker of ``payload``."""
    env = {var: str(payload[field]) for field, names in ENV_NAMES.items() for var in names}
    socket_path = str(payload["socketPath"])
    port = socket_path.rpartition(":")[2] if socket_path.startswith("tcp://") else ""
    env[ENV_TCP_PORT] = port
    return env

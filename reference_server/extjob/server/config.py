"""Server configuration: the TOML file and job definitions.

A config file looks like this (relative paths are relative to the file)::

    database = "extjob.db"          # SQLite file (WAL), or a postgresql:// URL shared by
                                    # several servers; EXTJOB_DATABASE / --database override it
    lease_ms = 15000                # several servers: a server silent this long is gone,
                                    # its running attempts are retried elsewhere
    socket_dir = "/tmp/extjob-run"  # per-attempt sockets, mode 0700 (TRANS-2)
    spool_dir = "spool"             # spool files (SPOOL-1) and worker output (SRV-7)
    concurrency = 16                # running jobs at once in this server
    require_hello = false           # AUTH-5: refuse v1 workers
    secret_env = ["MY_API_TOKEN"]   # more variables never passed to workers (ENV-3; the
                                    # API token's is always kept back, environment.py)

    [http]                          # read by the HTTP API (issue 6), untouched here

    [jobs.resize]
    command = "python3"
    args = ["resize.py"]
    cwd = "."
    env = { QUALITY = "90" }
    heartbeat_timeout_ms = 30000
    timeout_ms = 600000             # 0: no job timeout (TIMEOUT-1)
    kill_grace_ms = 5000
    cancel_deadline_ms = 10000
    max_attempts = 3
    retry_backoff_ms = 1000
    max_retry_backoff_ms = 60000
    concurrency = 2                 # 0: no per-name limit
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from extjob.protocol import (
    DEFAULT_CANCEL_DEADLINE_MS,
    DEFAULT_HEARTBEAT_TIMEOUT_MS,
    DEFAULT_KILL_GRACE_MS,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_MAX_RETRY_BACKOFF_MS,
    DEFAULT_RECONNECT_WINDOW_MS,
    DEFAULT_RETRY_BACKOFF_MS,
)

from .store import is_url

# Long enough to ride out a stalled host or a database restart, short enough
# that a lost host's jobs are retried within seconds (issue 12).
DEFAULT_LEASE_MS = 15_000
DATABASE_ENV = "EXTJOB_DATABASE"

# sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


@dataclasses.dataclass(frozen=True)
class JobDefinition:
    """How to run the workers of one job name."""

    name: str
    command: str
    args: tuple[str, ...] = ()
    cwd: str | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    heartbeat_timeout_ms: int = DEFAULT_HEARTBEAT_TIMEOUT_MS
    timeout_ms: int = 0
    kill_grace_ms: int = DEFAULT_KILL_GRACE_MS
    cancel_deadline_ms: int = DEFAULT_CANCEL_DEADLINE_MS
    max_attempts: int = 1
    retry_backoff_ms: int = DEFAULT_RETRY_BACKOFF_MS
    max_retry_backoff_ms: int = DEFAULT_MAX_RETRY_BACKOFF_MS
    concurrency: int = 0

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 256:
            raise ValueError(f"job name must be 1-256 characters, got {self.name!r}")
        if not isinstance(self.command, str) or not self.command:
            raise ValueError(f"job {self.name!r}: command must be a non-empty string")
        if not all(isinstance(a, str) for a in self.args):
            raise ValueError(f"job {self.name!r}: args must be strings")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise ValueError(f"job {self.name!r}: env must map strings to strings")
        _check_int(self.name, "heartbeat_timeout_ms", self.heartbeat_timeout_ms, 30)
        for knob in ("timeout_ms", "kill_grace_ms", "cancel_deadline_ms", "concurrency"):
            _check_int(self.name, knob, getattr(self, knob), 0)
        for knob in ("retry_backoff_ms", "max_retry_backoff_ms"):
            _check_int(self.name, knob, getattr(self, knob), 0)
        _check_int(self.name, "max_attempts", self.max_attempts, 1)


def _check_int(where: str, knob: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{where}: {knob} must be an integer >= {minimum}, got {value!r}")


@dataclasses.dataclass
class ServerConfig:
    """Everything a JobServer needs; ``jobs`` may also be filled via ``register_external``."""

    database: str = "extjob.db"
    socket_dir: str = dataclasses.field(default_factory=lambda: f"/tmp/extjob-{os.getuid()}")
    spool_dir: str = "extjob-spool"
    concurrency: int = 16
    poll_interval_ms: int = 500
    require_hello: bool = False
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    reconnect_window_ms: int = DEFAULT_RECONNECT_WINDOW_MS
    secret_env: tuple[str, ...] = ()
    lease_ms: int = DEFAULT_LEASE_MS
    # Identifies this server's running jobs in a shared database, so that a
    # restart re-adopts its own workers and never another server's.
    server_id: str = ""
    jobs: dict[str, JobDefinition] = dataclasses.field(default_factory=dict)
    http: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_int("config", "concurrency", self.concurrency, 1)
        _check_int("config", "poll_interval_ms", self.poll_interval_ms, 1)
        _check_int("config", "max_line_bytes", self.max_line_bytes, 65536)
        _check_int("config", "reconnect_window_ms", self.reconnect_window_ms, 0)
        _check_int("config", "lease_ms", self.lease_ms, 100)
        if not isinstance(self.database, str) or not self.database:
            raise ValueError("database must be a SQLite file path or a postgresql:// URL")
        if not self.server_id:
            self.server_id = f"{socket.gethostname()}:{os.path.abspath(self.socket_dir)}"
        # A job id is at most 24 characters, an attempt number a few digits.
        longest = len(os.path.abspath(self.socket_dir)) + len("/j_0123456789abcdef0123.999.sock")
        if longest > MAX_SOCKET_PATH:
            raise ValueError(
                f"socket_dir {self.socket_dir!r} is too long for Unix socket paths "
                f"({MAX_SOCKET_PATH} bytes); choose a shorter directory"
            )


_SERVER_KEYS = {f.name for f in dataclasses.fields(ServerConfig)} - {"jobs"}
_JOB_KEYS = {f.name for f in dataclasses.fields(JobDefinition)} - {"name"}
_PATH_KEYS = ("database", "socket_dir", "spool_dir")


def load_config(
    path: str | os.PathLike[str],
    database: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ServerConfig:
    """Read a TOML config file; raises ValueError naming the file and the bad key.

    The database is, first found: ``database`` (``--database``),
    ``EXTJOB_DATABASE``, the file's ``database`` key, ``extjob.db``.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read config: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from e
    override = database or environ.get(DATABASE_ENV)
    if override:
        # Given on the command line or in the environment: a path is relative
        # to the working directory, not to the file.
        raw = {**raw, "database": override if is_url(override) else os.path.abspath(override)}
    try:
        return config_from_dict(raw, base=path.parent)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: {e}") from e


def config_from_dict(raw: Mapping[str, Any], base: Path = Path(".")) -> ServerConfig:
    unknown = set(raw) - _SERVER_KEYS - {"jobs"}
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    options = {k: v for k, v in raw.items() if k != "jobs"}
    for key in _PATH_KEYS:
        if key in options and not (key == "database" and is_url(str(options[key]))):
            options[key] = str(base / options[key])
    if "secret_env" in options:
        options["secret_env"] = tuple(options["secret_env"])
    jobs_table = raw.get("jobs", {})
    if not isinstance(jobs_table, Mapping):
        raise ValueError("[jobs] must be a table of job definitions")
    jobs = {name: job_from_dict(name, spec, base) for name, spec in jobs_table.items()}
    return ServerConfig(**options, jobs=jobs)


def job_from_dict(name: str, spec: Any, base: Path) -> JobDefinition:
    if not isinstance(spec, Mapping):
        raise ValueError(f"[jobs.{name}] must be a table")
    unknown = set(spec) - _JOB_KEYS
    if unknown:
        raise ValueError(f"[jobs.{name}]: unknown keys: {', '.join(sorted(unknown))}")
    options = dict(spec)
    if "command" not in options:
        raise ValueError(f"[jobs.{name}]: command is required")
    options["args"] = tuple(options.get("args", ()))
    if "cwd" in options:
        options["cwd"] = str(base / options["cwd"])
    return JobDefinition(name=name, **options)

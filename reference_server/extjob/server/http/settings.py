"""The ``[http]`` table of the server's config file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_TOKEN_ENV = "EXTJOB_TOKEN"
DEFAULT_EVENT_HISTORY = 10_000
MIN_TOKEN_CHARS = 16
DEFAULT_IDLE_TIMEOUT_MS = 15_000

_KEYS = {
    "host",
    "port",
    "token",
    "token_env",
    "event_history",
    "max_connections",
    "idle_timeout_ms",
}


class SettingsError(ValueError):
    """The ``[http]`` table cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class HttpSettings:
    """Where the API listens and the bearer token every request but health needs.

    The token comes from ``token`` in the table or, when that is absent, from
    the environment variable named by ``token_env`` (``EXTJOB_TOKEN``), so that
    a config file can be committed without its secret.
    """

    token: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    event_history: int = DEFAULT_EVENT_HISTORY
    max_connections: int = 0  # 0: a quarter of the open files limit (limits.py)
    idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS

    @classmethod
    def from_table(
        cls, table: Mapping[str, Any], environ: Mapping[str, str] = os.environ
    ) -> HttpSettings:
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise SettingsError(f"[http]: unknown key(s) {', '.join(unknown)}")
        host = table.get("host", DEFAULT_HOST)
        if not isinstance(host, str) or not host:
            raise SettingsError("[http] host: must be a non-empty string")
        port = table.get("port", DEFAULT_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise SettingsError("[http] port: must be an integer from 0 to 65535")
        history = table.get("event_history", DEFAULT_EVENT_HISTORY)
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise SettingsError("[http] event_history: must be a positive integer")
        max_connections = table.get("max_connections", 0)
        if not _is_int(max_connections) or max_connections < 0:
            raise SettingsError("[http] max_connections: must be an integer >= 0 (0: automatic)")
        idle_timeout_ms = table.get("idle_timeout_ms", DEFAULT_IDLE_TIMEOUT_MS)
        if not _is_int(idle_timeout_ms) or idle_timeout_ms < 100:
            raise SettingsError("[http] idle_timeout_ms: must be an integer >= 100")
        token_env = table.get("token_env", DEFAULT_TOKEN_ENV)
        if not isinstance(token_env, str) or not token_env:
            raise SettingsError("[http] token_env: must be an environment variable name")
        token = table.get("token") or environ.get(token_env, "")
        if not isinstance(token, str) or not token:
            raise SettingsError(
                f"no API token: set [http] token in the config or the {token_env} "
                "environment variable (for example: export "
                f"{token_env}=$(python3 -c 'import secrets; print(secrets.token_hex(16))'))"
            )
        if len(token) < MIN_TOKEN_CHARS:
            raise SettingsError(f"the API token must have at least {MIN_TOKEN_CHARS} characters")
        return cls(
            token=token,
            host=host,
            port=port,
            event_history=history,
            max_connections=max_connections,
            idle_timeout_ms=idle_timeout_ms,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

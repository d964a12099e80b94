"""Request validation: every bad input becomes a 4xx that names the field."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..models import STATUSES

_ENQUEUE_FIELDS = {"name", "data", "maxAttempts", "runAt", "priority"}


class RequestError(Exception):
    """An HTTP error with a machine-readable code and, when known, the bad field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def enqueue_options(body: Any) -> dict[str, Any]:
    """``POST /api/jobs`` body -> keyword arguments of ``JobServer.enqueue``."""
    if not isinstance(body, dict):
        raise RequestError(400, "invalid_body", "the body must be a JSON object")
    unknown = sorted(set(body) - _ENQUEUE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(_ENQUEUE_FIELDS))
        raise RequestError(
            400,
            "unknown_field",
            f"unknown field(s) {', '.join(unknown)} (allowed: {allowed})",
            unknown[0],
        )
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 256:
        raise RequestError(400, "invalid_field", "name: a string of 1-256 characters", "name")
    options: dict[str, Any] = {"name": name, "data": body.get("data", {})}
    if body.get("maxAttempts") is not None:
        options["max_attempts"] = _int(body, "maxAttempts", low=1)
    if body.get("priority") is not None:
        options["priority"] = _int(body, "priority")
    if body.get("runAt") is not None:
        options["run_at"] = _epoch_ms(body["runAt"])
    return options


def query_int(
    query: Mapping[str, str], key: str, default: int, low: int, high: int | None = None
) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f">= {low}"
        raise RequestError(400, "invalid_query", f"{key}: an integer {bounds}, got {raw!r}", key)
    return value


def query_status(query: Mapping[str, str]) -> str | None:
    status = query.get("status") or None
    if status is not None and status not in STATUSES:
        raise RequestError(
            400, "invalid_query", f"status: one of {', '.join(STATUSES)}, got {status!r}", "status"
        )
    return status


def _int(body: Mapping[str, Any], key: str, low: int | None = None) -> int:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        floor = f" >= {low}" if low is not None else ""
        raise RequestError(400, "invalid_field", f"{key}: an integer{floor}, got {value!r}", key)
    return value


def _epoch_ms(value: Any) -> int:
    """``runAt``: epoch milliseconds, or an ISO 8601 time with a UTC offset."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return int(moment.timestamp() * 1000)
    raise RequestError(
        400,
        "invalid_field",
        "runAt: epoch milliseconds or an ISO 8601 time with an offset "
        f"(2026-01-01T12:00:00Z), got {value!r}",
        "runAt",
    )

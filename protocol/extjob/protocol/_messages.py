"""Messages: decoding and checking worker lines, building server lines."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from operator import call
from typing import Any, NamedTuple

import orjson

from ._errors import RemoteProtocolError
from ._kinds import SEQUENCED_TYPES, TERMINAL_TYPES
from ._schemas import (
    Direction,
    Problem,
    explain,
    fast_list_validator,
    fast_validator,
    message_schema,
    message_types,
)
from ._timing import PROTOCOL_VERSION


class Message(NamedTuple):
    """One decoded, schema-valid message.

    ``body`` is the whole JSON object as received, unknown fields included
    (MSG-2), so that nothing is lost when a server stores or forwards it.
    ``seq`` is None for a type that is never sequenced (hello, heartbeat,
    private x- types): there it is a field the schema does not know, which a
    receiver ignores (MSG-2), whatever its value.
    Immutable; a named tuple because one is made for every line a server
    reads, and it is made three times faster than a frozen dataclass.
    """

    type: str
    job_id: str
    timestamp: int
    seq: int | None
    body: Mapping[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


#: Parser complaints that mean the sender broke FRAME-2 (escaping, UTF-8)
#: rather than FRAME-1 (one JSON object per line).
_ESCAPING_FAULTS = ("control character", "surrogate", "UTF-8")


def parse_line(line: bytes) -> Any:
    """Strict JSON (FRAME-1, FRAME-2): no NaN, no lone surrogates, valid UTF-8 only.

    The requirement named is the sender's rule that the line broke, so that a
    report tells the wrapper author what to fix.
    """
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        fault = str(exc)
        rule = "FRAME-2" if any(word in fault for word in _ESCAPING_FAULTS) else "FRAME-1"
        raise RemoteProtocolError("invalid_json", rule, f"not valid JSON: {fault}") from exc


def _type_of(obj: dict[str, Any], direction: Direction) -> str | None:
    """The schema to use for ``obj``: its type, or None for a private x- type."""
    type_ = obj.get("type")
    if not isinstance(type_, str):
        field = "type"
        if "type" not in obj:
            raise RemoteProtocolError("invalid_message", "MSG-1", "missing", field)
        raise RemoteProtocolError("invalid_message", "MSG-1", "must be a string", field)
    if type_ in message_types(direction):
        return type_
    if type_.startswith("x-"):
        return None
    raise RemoteProtocolError("unknown_type", "MSG-10", f"unknown message type {type_!r}", "type")


def _explain(obj: dict[str, Any], direction: Direction, type_: str | None) -> list[Problem]:
    # A private x- type is explained through the envelope schema that dispatches to it.
    return explain(
        obj, message_schema(direction, type_) if type_ else f"{direction}-message.schema.json"
    )


def decode(line: bytes, direction: Direction = "worker") -> Message:
    """Parse and validate one line; raise :class:`RemoteProtocolError` if bad.

    This is the hot path of the server and of ``extjob validate``: strict
    JSON parsing by orjson, then the compiled schema of the message's own
    type. Only a failing line pays for a readable explanation.
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        obj = parse_line(line)  # raises the error that names the rule broken
    return decode_object(obj, direction)


# Direction -> message type -> the compiled schema's ``is_valid``, for the hot
# path: a dict lookup per message where functools.cache would hash its arguments.
_VALIDITY_CHECKS: dict[str, dict[str, Callable[[Any], bool]]] = {}


def _checks_by_type(
    cache: dict[str, dict[str, Callable[[Any], bool]]],
    validator: Callable[[str], Any],
    direction: Direction,
) -> dict[str, Callable[[Any], bool]]:
    checks = cache.get(direction)
    if checks is None:
        checks = cache[direction] = {
            type_: validator(message_schema(direction, type_)).is_valid
            for type_ in message_types(direction)
        }
    return checks


def _validity_checks(direction: Direction) -> dict[str, Callable[[Any], bool]]:
    return _checks_by_type(_VALIDITY_CHECKS, fast_validator, direction)


# Message(...) runs the named tuple's Python __new__; tuple.__new__ is the same
# tuple built in C, twice as fast, on a path taken for every line read.
_new_tuple = tuple.__new__


def decode_object(obj: Any, direction: Direction = "worker") -> Message:
    """Validate an already parsed JSON value as a message."""
    if type(obj) is not dict:
        raise RemoteProtocolError("invalid_message", "FRAME-1", "a line must be a JSON object")
    type_ = obj.get("type")
    checks = _VALIDITY_CHECKS.get(direction) or _validity_checks(direction)
    is_valid = checks.get(type_) if type(type_) is str else None
    if is_valid is None:  # missing, not a string, unknown or private: the slow path
        schema_type = _type_of(obj, direction)
        is_valid = fast_validator(message_schema(direction, schema_type)).is_valid
    if not is_valid(obj):
        schema_type = _type_of(obj, direction)
        problem = next(iter(_explain(obj, direction, schema_type)), Problem("MSG-1", None, "bad"))
        raise RemoteProtocolError(
            "invalid_message", problem.requirement, problem.message, problem.field
        )
    seq = obj.get("seq") if type_ in SEQUENCED_TYPES else None
    return _new_tuple(Message, (type_, obj["jobId"], obj["timestamp"], seq, obj))


# Direction -> message type -> ``is_valid`` of a list of messages of that type.
_LIST_CHECKS: dict[str, dict[str, Callable[[Any], bool]]] = {}
_dict_get = dict.get
_SEQ_KEY = dict.fromkeys(SEQUENCED_TYPES, "seq")


def decode_all(lines: Sequence[bytes], direction: Direction = "worker") -> list[Message] | None:
    """The messages of many lines, as ``decode`` makes them one by one, in a
    few native calls for them all; None when any line is not a valid message
    of a defined type (or not a line at all: an empty or oversized one).

    The fast path of a read of many lines. None says only that some line is
    unusual: the caller decodes them one by one, which says which and why
    (SRV-6). The checks are :func:`decode_bodies`'.
    """
    decoded = decode_bodies(lines, direction)
    if decoded is None:
        return None
    objs, types, kinds = decoded
    job_ids = map(_dict_get, objs, repeat("jobId"))
    stamps = map(_dict_get, objs, repeat("timestamp"))
    if kinds <= SEQUENCED_TYPES:
        seqs = map(_dict_get, objs, repeat("seq"))
    else:  # MSG-2: on another type a seq is an unknown field (no key None in JSON)
        seqs = map(_dict_get, objs, map(_SEQ_KEY.get, types))
    return list(
        map(_new_tuple, repeat(Message), zip(types, job_ids, stamps, seqs, objs, strict=True))
    )


class Bodies(NamedTuple):
    """Valid messages not made into :class:`Message` yet, with their types."""

    objs: list[Any]
    types: list[Any]
    kinds: set[Any]  #: the types there are


def decode_bodies(lines: Sequence[bytes], direction: Direction = "worker") -> Bodies | None:
    """The bodies of many lines if each is a valid message of a defined type,
    checked as ``decode`` checks one, in a few native calls for them all;
    else None (then decode them one by one to learn which and why).

    Each line is parsed on its own (FRAME-1: a line is one JSON value, so the
    lines are never parsed as one text). Messages of one type are checked in
    one schema call; of several (progress, logs and heartbeats), a call per
    message beats sorting them by type in Python code first.
    """
    try:
        objs = list(map(orjson.loads, lines))
        types: list[Any] = list(map(_dict_get, objs, repeat("type")))  # TypeError: not an object
        kinds = set(types)  # TypeError: a type that is an array or an object
    except (orjson.JSONDecodeError, TypeError):
        return None
    if len(kinds) == 1:
        checks = _LIST_CHECKS.get(direction) or _checks_by_type(
            _LIST_CHECKS, fast_list_validator, direction
        )
        is_valid = checks.get(types[0])
        if is_valid is None or not is_valid(objs):  # missing, not a string, unknown, private
            return None
    else:
        checks = _VALIDITY_CHECKS.get(direction) or _validity_checks(direction)
        try:
            if not all(map(call, map(checks.__getitem__, types), objs)):
                return None
        except KeyError:  # missing, not a string, unknown or private
            return None
    return Bodies(objs, types, kinds)


def message_of(obj: Mapping[str, Any]) -> Message:
    """The Message of an object already known to be valid (checked elsewhere,
    for example in another process). Nothing is checked here."""
    type_ = obj["type"]
    seq = obj.get("seq") if type_ in SEQUENCED_TYPES else None
    return Message(type_, obj["jobId"], obj["timestamp"], seq, obj)


def problems(obj: Any, direction: Direction = "worker") -> list[Problem]:
    """Everything wrong with one message (empty when it is valid)."""
    try:
        decode_object(obj, direction)
    except RemoteProtocolError as exc:
        if exc.code == "invalid_message" and exc.field != "type" and type(obj) is dict:
            return _explain(obj, direction, _type_of(obj, direction))
        return [Problem(exc.requirement, exc.field, exc.detail)]
    return []


def validate_payload(obj: Any) -> list[Problem]:
    """Everything wrong with a stdin payload (PAY-2, PAY-3); empty when valid."""
    if type(obj) is not dict:
        return [Problem("PAY-6", None, "the payload must be a JSON object")]
    if fast_validator("payload.schema.json").is_valid(obj):
        return []
    return explain(obj, "payload.schema.json")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def welcome(
    job_id: str, features: list[str], last_seq: int, heartbeat_interval_ms: int
) -> dict[str, Any]:
    """CTRL-2: the reply to an accepted hello."""
    return {
        "type": "welcome",
        "jobId": job_id,
        "timestamp": _now_ms(),
        "protocolVersion": PROTOCOL_VERSION,
        "features": list(features),
        "lastSeq": last_seq,
        "heartbeatIntervalMs": heartbeat_interval_ms,
    }


def ack(job_id: str, seq: int) -> dict[str, Any]:
    """CTRL-3: every message up to ``seq`` is durably recorded."""
    return {"type": "ack", "jobId": job_id, "timestamp": _now_ms(), "seq": seq}


def cancel(job_id: str, reason: str, deadline_ms: int) -> dict[str, Any]:
    """CTRL-4: stop gracefully within ``deadline_ms``."""
    return {
        "type": "cancel",
        "jobId": job_id,
        "timestamp": _now_ms(),
        "reason": reason,
        "deadlineMs": deadline_ms,
    }


def error(
    job_id: str, code: str, message: str, requirement: str | None = None, seq: int | None = None
) -> dict[str, Any]:
    """CTRL-5: why a line was rejected."""
    body: dict[str, Any] = {
        "type": "error",
        "jobId": job_id,
        "timestamp": _now_ms(),
        "code": code,
        "message": message,
    }
    if requirement:
        body["requirement"] = requirement
    if seq is not None:
        body["seq"] = seq
    return body

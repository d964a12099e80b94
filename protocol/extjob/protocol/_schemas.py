"""The JSON Schemas in ``schema/``: the single source of truth for messages.

Two validators read the same files. jsonschema-rs (compiled) answers "is this
valid?" on the hot path; jsonschema (pure Python) explains *why not* for the
lines that fail, with the requirement id taken from the ``description`` of
the schema part that failed, so no rule is stated twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jsonschema_rs

if TYPE_CHECKING:  # imported where a line is explained: a tenth of a second to import
    import jsonschema
    from referencing import Registry
    from referencing._core import Resolver

SCHEMA_DIR = Path(__file__).with_name("schema")
Direction = Literal["worker", "server"]

_REQUIREMENT = re.compile(r"\b([A-Z]+-\d+)\b")
_MISSING = re.compile(r"^'(.+)' is a required property$")
_TYPE_DIRS: dict[Direction, str] = {"worker": "messages", "server": "server"}


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a message, a payload or a stream.

    ``severity`` is ``"warning"`` for a deviation the spec tells receivers to
    tolerate (LIFE-2): the sender still broke ``requirement``, but a stream
    with only warnings is one a server handles correctly. Every report of
    ``extjob validate`` grades by it; ``extjob conformance`` fails a wrapper
    for either (a tolerated deviation is still a broken MUST).
    """

    requirement: str
    field: str | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.requirement}: {self.field + ': ' if self.field else ''}{self.message}"


def _load(relative: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / relative).read_text(encoding="utf-8"))
    return schema


@cache
def _all_schemas() -> dict[str, dict[str, Any]]:
    """Every schema by ``$id``."""
    return {
        schema["$id"]: schema
        for schema in (
            _load(str(path.relative_to(SCHEMA_DIR)))
            for path in sorted(SCHEMA_DIR.rglob("*.schema.json"))
            if "vectors" not in path.parts
        )
    }


@cache
def _python_registry() -> Registry[Any]:
    from referencing import Registry, Resource

    return Registry().with_resources(
        (uri, Resource.from_contents(schema)) for uri, schema in _all_schemas().items()
    )


@cache
def _rs_registry() -> Any:
    return jsonschema_rs.Registry(list(_all_schemas().items()))


@cache
def message_types(direction: Direction) -> tuple[str, ...]:
    """The message types defined for one direction, from the envelope schema."""
    envelope = _load(f"{direction}-message.schema.json")
    enum: list[str] = envelope["properties"]["type"]["anyOf"][0]["enum"]
    return tuple(enum)


def _schema_path(direction: Direction, type_: str) -> str:
    return f"{_TYPE_DIRS[direction]}/{type_}.schema.json"


@cache
def fast_validator(relative: str) -> Any:
    """A compiled validator for one schema file (``file#/pointer`` for a part)."""
    path, _, pointer = relative.partition("#")
    schema = {"$ref": f"{_load(path)['$id']}#{pointer}"} if pointer else _load(path)
    return jsonschema_rs.Draft202012Validator(schema, registry=_rs_registry())


@cache
def fast_list_validator(relative: str) -> Any:
    """A compiled validator for a JSON array whose every item is valid against one
    schema file: one native call checks a whole read of one message type."""
    schema = {"type": "array", "items": {"$ref": _load(relative)["$id"]}}
    return jsonschema_rs.Draft202012Validator(schema, registry=_rs_registry())


@cache
def _explaining_validator(relative: str) -> jsonschema.protocols.Validator:
    import jsonschema

    return jsonschema.Draft202012Validator(_load(relative), registry=_python_registry())


def _requirement_of(text: str | None, default: str) -> str:
    found = _REQUIREMENT.search(text or "")
    return found.group(1) if found else default


def _resolve(
    schema: Mapping[str, Any], resolver: Resolver[Any]
) -> tuple[Mapping[str, Any], Resolver[Any]]:
    """Follow ``$ref``s within our own files, to read a description."""
    while "$ref" in schema:
        resolved = resolver.lookup(schema["$ref"])
        schema, resolver = resolved.contents, resolved.resolver
    return schema, resolver


@cache
def _field_requirements(relative: str) -> dict[str, str]:
    """Field name -> requirement id, read from the property descriptions."""
    schema = _load(relative)
    default = _requirement_of(schema.get("description"), "MSG-1")
    top = _python_registry().resolver(base_uri=schema["$id"])
    parts = [(schema, top), *(_resolve(part, top) for part in schema.get("allOf", []))]
    fields: dict[str, str] = {}
    for part, resolver in parts:
        for name, prop in part.get("properties", {}).items():
            described = prop.get("description") or _resolve(prop, resolver)[0].get("description")
            fields.setdefault(name, _requirement_of(described, default))
    return fields


def explain(instance: Any, relative: str) -> list[Problem]:
    """Every schema violation of ``instance`` against one schema file, in order."""
    validator = _explaining_validator(relative)
    schema = _load(relative)
    default = _requirement_of(schema.get("description"), "MSG-1")
    fields = _field_requirements(relative)
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path))):
        path = [str(part) for part in error.absolute_path]
        missing = _MISSING.match(error.message) if error.validator == "required" else None
        if missing:
            path = [*path, missing.group(1)]
        field = ".".join(path) or None
        requirement = fields.get(path[0], default) if path else default
        problems.append(Problem(requirement, field, error.message))
    return problems


def message_schema(direction: Direction, type_: str | None) -> str:
    """The schema (relative to ``schema/``) of a message type; None: private x- type."""
    return _schema_path(direction, type_) if type_ else "common.schema.json#/$defs/envelope"

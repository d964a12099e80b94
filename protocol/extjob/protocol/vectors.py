"""The shared test vectors of ``schema/vectors/``, for Python tests.

Every language's tests read the same files; this module is the Python
reading of their format (``schema/vectors/vectors.schema.json``).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ._schemas import SCHEMA_DIR

VECTOR_DIR = SCHEMA_DIR / "vectors"


def load(name: str) -> list[dict[str, Any]]:
    """The tests of one vector file, e.g. ``load("streams.json")``."""
    tests: list[dict[str, Any]] = json.loads((VECTOR_DIR / name).read_text(encoding="utf-8"))[
        "tests"
    ]
    return tests


def vector_id(test: dict[str, Any]) -> str:
    """A readable pytest id: ``REQ-ID:description``."""
    return f"{test['requirement']}:{test['description']}"


def raw_line(test: dict[str, Any]) -> bytes:
    """The bytes of a line vector (given as text or as base64)."""
    if "lineBase64" in test:
        return base64.b64decode(test["lineBase64"])
    line: str = test["line"]
    return line.encode("utf-8")

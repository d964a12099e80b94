"""Every requirement id of SPEC.md is named by a test, listed by a conformance
case or carried by a vector, or listed in ``protocol/coverage.md`` as not
testable from outside. A comment that mentions an id does not count: it says
nothing about whether a test checks the rule."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from extjob.conformance import CASES

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "protocol" / "SPEC.md"
TABLE = REPO / "protocol" / "coverage.md"
VECTORS = REPO / "schema" / "vectors"

_DEFINED = re.compile(r"\*\*([A-Z]{2,10}-\d+)\*\*")
_ROW = re.compile(r"^\|\s*([A-Z]{2,10}-\d+)\s*\|\s*(\S.*?)\s*\|\s*$", re.M)

#: A test's name, by language: Python and shell-driving tests, Go, Rust
#: (also the unit tests in wrappers/rust/src), TypeScript titles.
_TEST_NAMES = {
    ".py": re.compile(r"^\s*(?:async\s+)?def (test\w*)", re.M),
    ".go": re.compile(r"^func (Test\w+)\(", re.M),
    ".rs": re.compile(r"#\[test\]\s*(?:#\[[^\]]*\]\s*)*fn (\w+)"),
    ".ts": re.compile(r"""\btest\(\s*[`"']([^`"'\n]+)"""),
}
_SPELLED = re.compile(r"(?<![A-Z0-9-])([A-Z]{2,10}-\d+)(?![0-9])")  # "RECONNECT-6: ..."
_SNAKE = re.compile(r"([a-z]{2,10}_\d+)(?![0-9])", re.I)  # test_reconnect_6_...
_CAMEL = re.compile(r"([A-Z][a-z]{1,9})(\d+)(?![0-9])")  # TestReconnect6...


def _test_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        REPO / name
        for name in listed
        if Path(name).suffix in _TEST_NAMES
        and ("test" in name or name.startswith("wrappers/rust/src/"))
        and (REPO / name).is_file()
    ]


def _ids_in_name(name: str) -> set[str]:
    return (
        set(_SPELLED.findall(name))
        | {n.upper().replace("_", "-") for n in _SNAKE.findall(name)}
        | {f"{word.upper()}-{number}" for word, number in _CAMEL.findall(name)}
    )


def _in_test_names() -> dict[str, set[str]]:
    """Language (file suffix) → the ids its tests are named after."""
    found: dict[str, set[str]] = {suffix: set() for suffix in _TEST_NAMES}
    for path in _test_files():
        for name in _TEST_NAMES[path.suffix].findall(path.read_text(errors="replace")):
            found[path.suffix] |= _ids_in_name(name)
    return found


def _in_vectors() -> set[str]:
    return {
        test["requirement"]
        for path in VECTORS.glob("*.json")
        if path.name != "vectors.schema.json"
        for test in json.loads(path.read_text())["tests"]
    }


def _named(ids: set[str]) -> set[str]:
    in_cases = {r for case in CASES for r in case.requirements}
    return (set().union(*_in_test_names().values()) | in_cases | _in_vectors()) & ids


def test_every_requirement_is_named_by_a_test_case_or_vector_or_explained() -> None:
    ids = set(_DEFINED.findall(SPEC.read_text()))
    untestable = dict(_ROW.findall(TABLE.read_text()))
    assert set(untestable) <= ids, f"the table names ids SPEC.md lacks: {set(untestable) - ids}"
    unnamed = ids - _named(ids) - set(untestable)
    assert not unnamed, f"no test, case or vector is named after: {sorted(unnamed)}"


def test_the_table_only_lists_what_no_test_reaches() -> None:
    untestable = dict(_ROW.findall(TABLE.read_text()))
    assert not _named(set(untestable)), "named now: move it out of protocol/coverage.md"


def test_test_names_are_read_in_every_language() -> None:
    # The forms the test above must recognise; a form it missed would hide a
    # named test and fail it for no reason, or let a new form go unchecked.
    assert _ids_in_name("test_env_1_and_env_3_worker_environment") == {"ENV-1", "ENV-3"}
    assert _ids_in_name("TestReconnect6FirstConnectionNeverMadeExits") == {"RECONNECT-6"}
    assert _ids_in_name("TestNeg3Trans1V1WorkerNeverWaits") == {"NEG-3", "TRANS-1"}
    assert _ids_in_name("RECONNECT-1, LIFE-3: after a drop") == {"RECONNECT-1", "LIFE-3"}
    assert all(_in_test_names().values()), "a language whose tests name no id"

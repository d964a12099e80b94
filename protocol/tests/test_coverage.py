"""Every requirement id of SPEC.md is cited by a test, a case or a vector,
or listed in ``protocol/coverage.md`` as not testable from outside."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "protocol" / "SPEC.md"
TABLE = REPO / "protocol" / "coverage.md"

_DEFINED = re.compile(r"\*\*([A-Z]{2,10}-\d+)\*\*")
_ROW = re.compile(r"^\|\s*([A-Z]{2,10}-\d+)\s*\|\s*(\S.*?)\s*\|\s*$", re.M)


def _where_ids_count() -> list[Path]:
    """Tests of every language, the conformance suite, the shared vectors."""
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
        if name != "protocol/SPEC.md"
        and ("test" in name or name.startswith(("conformance/", "schema/vectors/")))
        and (REPO / name).is_file()
    ]


_SPELLED = re.compile(r"(?<![A-Z0-9-])([A-Z]{2,10}-\d+)(?![0-9])")
_NAMED = re.compile(r"([a-z]{2,10}_\d+)(?![0-9])", re.I)  # test_reconnect_6_...


def _cited(ids: set[str]) -> set[str]:
    found: set[str] = set()
    for path in _where_ids_count():
        text = path.read_text(errors="replace")
        found.update(_SPELLED.findall(text))
        found.update(n.upper().replace("_", "-") for n in _NAMED.findall(text))
    return found & ids


def test_every_requirement_is_cited_or_explained() -> None:
    ids = set(_DEFINED.findall(SPEC.read_text()))
    untestable = dict(_ROW.findall(TABLE.read_text()))
    assert set(untestable) <= ids, f"the table names ids SPEC.md lacks: {set(untestable) - ids}"
    uncited = ids - _cited(ids) - set(untestable)
    assert not uncited, f"cited by no test, case or vector: {sorted(uncited)}"


def test_the_table_only_lists_what_no_test_reaches() -> None:
    untestable = dict(_ROW.findall(TABLE.read_text()))
    assert not _cited(set(untestable)), "cited now: move it out of protocol/coverage.md"

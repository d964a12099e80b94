"""Coverage as data: every SPEC requirement is tested here or explained, and the
guide shows the same table."""

from __future__ import annotations

import re
from pathlib import Path

from extjob.conformance import CASES, coverage

GUIDE = Path(__file__).parents[1] / "README.md"
# The checkout's SPEC, passed on every call: the installed package (tox installs
# a wheel) has no SPEC.md and would know the ids only from its own groups.
SPEC = Path(__file__).parents[2] / "protocol" / "SPEC.md"


def test_every_requirement_is_tested_or_explained() -> None:
    assert coverage.unexplained(SPEC) == []


def test_each_requirement_is_in_exactly_one_group() -> None:
    spec = set(coverage.spec_rules(SPEC))
    tested = set(coverage.tested())
    explained = [set(coverage.UNOBSERVABLE), set(coverage.NOT_THE_WORKERS)]
    assert tested | explained[0] | explained[1] == spec
    assert not (tested & explained[0]) and not (tested & explained[1])
    assert not explained[0] & explained[1]


def test_no_case_claims_a_rule_of_the_server() -> None:
    claimed = {(c.id, r) for c in CASES for r in c.requirements if r in coverage.NOT_THE_WORKERS}
    assert claimed == set()


def test_what_a_rule_is_reported_as_is_a_rule() -> None:
    spec = set(coverage.spec_rules(SPEC))
    assert {r for ids in coverage.REPORTED_AS.values() for r in ids} <= spec


def test_the_guide_includes_the_coverage_table() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    found = re.search(r"<!-- coverage -->\n(.*?)<!-- /coverage -->", guide, re.S)
    assert found, "conformance/README.md lacks the <!-- coverage --> section"
    assert found.group(1) == coverage.to_markdown(coverage.table(SPEC)), (
        "regenerate it: extjob conformance --coverage"
    )

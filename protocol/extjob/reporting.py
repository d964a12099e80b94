"""Report writers shared by ``extjob validate`` and ``extjob conformance``.

Both tools end with the same kind of result: test cases (a captured stream,
a conformance case), each passing, failing, skipped or broken by the harness,
with graded findings that name a requirement of SPEC.md. Each tool says in
its own words what a case is (:class:`TestCase`); the formats that machines
read are written here once: JUnit XML for CI dashboards, GitHub Actions
annotations, and JSON. The grading is one vocabulary for every format:
``error`` (a MUST broken) or ``warning`` (a SHOULD, or a deviation receivers
tolerate).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from xml.etree import ElementTree

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Annotation:
    """One graded finding at a place (a file, and a line of it if known)."""

    severity: Severity
    requirement: str
    text: str
    file: str | None = None
    line: int | None = None


@dataclass
class TestCase:
    """One case of a report, as JUnit sees it.

    ``failure``: (message, requirement, details) when it failed. ``error``:
    details of a harness fault (never blamed on what is tested). ``skipped``:
    why it did not run. ``output``: what else to show (warnings, transcripts).
    """

    __test__ = False  # not a pytest class, despite the name

    name: str
    classname: str
    seconds: float = 0.0
    failure: tuple[str, str, str] | None = None
    error: str | None = None
    skipped: str | None = None
    output: str | None = None


@dataclass
class Suite:
    name: str
    cases: list[TestCase] = field(default_factory=list)


def junit(name: str, suites: Sequence[Suite]) -> str:
    """JUnit XML: ``testsuites`` > ``testsuite`` per group > ``testcase``."""
    every = [case for suite in suites for case in suite.cases]
    root = ElementTree.Element("testsuites", {"name": name, **_counts(every)})
    for suite in suites:
        attributes = {"name": suite.name, **_counts(suite.cases)}
        element = ElementTree.SubElement(root, "testsuite", attributes)
        for case in suite.cases:
            _case(element, case)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, "unicode") + "\n"


def _counts(cases: Iterable[TestCase]) -> dict[str, str]:
    cases = list(cases)
    return {
        "tests": str(len(cases)),
        "failures": str(sum(c.failure is not None for c in cases)),
        "errors": str(sum(c.error is not None for c in cases)),
        "skipped": str(sum(c.skipped is not None for c in cases)),
    }


def _case(parent: ElementTree.Element, case: TestCase) -> None:
    element = ElementTree.SubElement(
        parent, "testcase", classname=case.classname, name=case.name, time=f"{case.seconds:.3f}"
    )
    if case.skipped is not None:
        ElementTree.SubElement(element, "skipped", message=case.skipped)
    if case.error is not None:
        ElementTree.SubElement(element, "error", message="harness error").text = case.error
    if case.failure is not None:
        message, requirement, details = case.failure
        failure = ElementTree.SubElement(element, "failure", message=message, type=requirement)
        failure.text = details
    if case.output:
        ElementTree.SubElement(element, "system-out").text = case.output


def github(annotations: Iterable[Annotation]) -> str:
    """GitHub Actions workflow commands: ``::error`` or ``::warning`` per finding."""
    lines = []
    for a in annotations:
        where = [] if a.file is None else [f"file={_escape_property(a.file)}"]
        if a.file is not None and a.line is not None:
            where.append(f"line={a.line}")
        where.append(f"title={_escape_property(a.requirement)}")
        text = a.text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        lines.append(f"::{a.severity} {','.join(where)}::{text}\n")
    return "".join(lines)


def _escape_property(value: str) -> str:
    escaped = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return escaped.replace(":", "%3A").replace(",", "%2C")


def to_json(document: Any) -> str:
    """The JSON form: one document, UTF-8 as is, one key per line or so."""
    return json.dumps(document, ensure_ascii=False, indent=1) + "\n"

"""The report writers that validate and conformance share."""

from __future__ import annotations

from xml.etree import ElementTree

from extjob import reporting
from extjob.conformance.model import FAIL, PASS, CaseResult, fail, nonstrict
from extjob.conformance.report import to_github, to_junit


def test_junit_counts_every_kind_of_case() -> None:
    cases = [
        reporting.TestCase("ok", "t"),
        reporting.TestCase("bad", "t", failure=("MSG-4: percent", "MSG-4", "details")),
        reporting.TestCase("broken", "t", error="Traceback"),
        reporting.TestCase("skip", "t", skipped="not claimed"),
    ]
    root = ElementTree.fromstring(reporting.junit("x", [reporting.Suite("core", cases)]))
    assert root.tag == "testsuites"
    counts = ("tests", "failures", "errors", "skipped")
    assert tuple(root.get(k) for k in counts) == ("4", "1", "1", "1")
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "core"
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None and failure.get("type") == "MSG-4"


def test_github_annotations_escape_and_grade() -> None:
    out = reporting.github(
        [
            reporting.Annotation("warning", "LIFE-1", "a\nb 100%", "dir,x/f:1.ndjson", 3),
            reporting.Annotation("error", "MSG-4", "no file"),
        ]
    )
    assert out.splitlines() == [
        "::warning file=dir%2Cx/f%3A1.ndjson,line=3,title=LIFE-1::a%0Ab 100%25",
        "::error title=MSG-4::no file",
    ]


def test_conformance_findings_become_graded_annotations_and_junit() -> None:
    results = [
        CaseResult("core/a", "A", "core", ("MSG-4",), FAIL, findings=[fail("MSG-4", "bad")]),
        CaseResult("core/b", "B", "core", ("HB-2",), PASS, findings=[nonstrict("HB-2", "often")]),
    ]
    lines = to_github(results, {}).splitlines()
    assert lines == ["::error title=MSG-4::core/a: bad", "::warning title=HB-2::core/b: often"]
    root = ElementTree.fromstring(to_junit(results, {}))
    assert root.get("failures") == "1"

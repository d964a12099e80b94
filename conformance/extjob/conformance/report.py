"""Reports: JSON for machines (the primary form), JUnit XML for CI, GitHub
annotations, text for people. The machine formats are written by
``extjob.reporting``, which ``extjob validate`` shares; a FAIL finding is an
``error`` there, a NON-STRICT one a ``warning``."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from extjob import reporting

from .model import ERROR, FAIL, NON_STRICT, PASS, SKIP, VERDICTS, CaseResult

FEATURE_ORDER = ("core", "auth", "replay", "control", "spool", "checkpoint")


def passed(results: Sequence[CaseResult]) -> bool:
    """Exit 0 only when every claimed case passed (non-strict is a pass with a note)."""
    return all(r.verdict in (PASS, NON_STRICT, SKIP) for r in results)


def summary(results: Sequence[CaseResult]) -> dict[str, dict[str, int]]:
    """feature → verdict → count."""
    table: dict[str, dict[str, int]] = {}
    for r in results:
        row = table.setdefault(r.feature, dict.fromkeys(VERDICTS, 0))
        row[r.verdict] += 1
    return {f: table[f] for f in sorted(table, key=_feature_key)}


def _feature_key(feature: str) -> int:
    return FEATURE_ORDER.index(feature) if feature in FEATURE_ORDER else len(FEATURE_ORDER)


def to_json(results: Sequence[CaseResult], meta: dict[str, Any]) -> str:
    document = {
        **meta,
        "passed": passed(results),
        "summary": summary(results),
        "cases": [asdict(r) for r in results],
    }
    return reporting.to_json(document)


def to_junit(results: Sequence[CaseResult], meta: dict[str, Any]) -> str:
    suites = []
    for feature in summary(results):
        suite = reporting.Suite(feature)
        for r in results:
            if r.feature == feature:
                suite.cases.append(_junit_case(r, feature))
        suites.append(suite)
    return reporting.junit("extjob conformance", suites)


def _junit_case(r: CaseResult, feature: str) -> reporting.TestCase:
    case = reporting.TestCase(r.case_id, f"conformance.{feature}", r.duration_s)
    if r.verdict == SKIP:
        case.skipped = r.reason
    elif r.verdict == ERROR:
        case.error = r.reason
    elif r.verdict == FAIL:
        first = next(f for f in r.findings if f.verdict == FAIL)
        case.failure = (f"{first.requirement}: {first.message}", first.requirement, _details(r))
    if r.verdict in (NON_STRICT, FAIL, ERROR):
        case.output = "\n".join(r.transcript)
    return case


def to_github(results: Sequence[CaseResult], meta: dict[str, Any]) -> str:
    """One annotation per finding (and per harness error), titled with its requirement."""
    annotations = [
        reporting.Annotation(
            "error" if f.verdict == FAIL else "warning",
            f.requirement,
            f"{r.case_id}: {f.message}"
            + (
                f" (expected {f.expected}, observed {f.observed})"
                if f.expected or f.observed
                else ""
            ),
        )
        for r in results
        for f in r.findings
    ]
    annotations += [
        reporting.Annotation("error", "harness", f"{r.case_id}: harness error (not the worker's)")
        for r in results
        if r.verdict == ERROR
    ]
    return reporting.github(annotations)


def to_text(results: Sequence[CaseResult], meta: dict[str, Any]) -> str:
    out = [
        f"extjob conformance: {' '.join(meta['command'])}",
        f"features claimed: {', '.join(meta['features'])}",
        *(f"waived: {w}" for w in meta.get("waivers", [])),
        "",
    ]
    table = summary(results)
    out.append(f"{'feature':<12}" + "".join(f"{v:>11}" for v in VERDICTS))
    for feature, row in table.items():
        out.append(f"{feature:<12}" + "".join(f"{row[v] or '·':>11}" for v in VERDICTS))
    out.append("")
    for r in results:
        note = r.reason.splitlines()[-1] if r.verdict in (SKIP, ERROR) and r.reason else ""
        reqs = ",".join(sorted({f.requirement for f in r.findings}))
        out.append(
            f"  {r.verdict.upper():<10} {r.case_id:<36} {r.duration_s:6.2f}s  {reqs or note}"
        )
    for r in results:
        if r.verdict in (FAIL, ERROR, NON_STRICT):
            out += [
                "",
                "=" * 78,
                f"{r.verdict.upper()} {r.case_id}: {r.title}",
                f"tests: {', '.join(r.requirements)}",
                _details(r),
            ]
            out += [
                "transcript (seconds since the case began; #n is the connection):",
                *(f"  {line}" for line in r.transcript),
            ]
            if r.stderr.strip():
                out += ["worker stderr:", textwrap.indent(r.stderr.rstrip()[-2000:], "  ")]
    out += ["", "RESULT: " + ("PASS" if passed(results) else "FAIL")]
    return "\n".join(out) + "\n"


def _details(r: CaseResult) -> str:
    if r.verdict == ERROR:
        return "harness error (not the worker's fault):\n" + r.reason
    lines = []
    for f in r.findings:
        lines.append(f"- {f.requirement} [{f.verdict}] {f.message}")
        if f.expected or f.observed:
            lines += [f"    expected: {f.expected}", f"    observed: {f.observed}"]
    return "\n".join(lines)


FORMATS = {"text": to_text, "json": to_json, "junit": to_junit, "github": to_github}

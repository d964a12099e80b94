"""Reports: JSON for machines (the primary form), JUnit XML for CI, text for people."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any
from xml.etree import ElementTree as ET

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
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def to_junit(results: Sequence[CaseResult], meta: dict[str, Any]) -> str:
    suites = ET.Element("testsuites", name="extjob conformance")
    for feature in summary(results):
        mine = [r for r in results if r.feature == feature]
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=feature,
            tests=str(len(mine)),
            failures=str(sum(r.verdict == FAIL for r in mine)),
            errors=str(sum(r.verdict == ERROR for r in mine)),
            skipped=str(sum(r.verdict == SKIP for r in mine)),
        )
        for r in mine:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"conformance.{feature}",
                name=r.case_id,
                time=f"{r.duration_s:.3f}",
            )
            if r.verdict == SKIP:
                ET.SubElement(case, "skipped", message=r.reason)
            elif r.verdict == ERROR:
                ET.SubElement(case, "error", message="harness error").text = r.reason
            elif r.verdict == FAIL:
                first = next(f for f in r.findings if f.verdict == FAIL)
                ET.SubElement(
                    case,
                    "failure",
                    message=f"{first.requirement}: {first.message}",
                    type=first.requirement,
                ).text = _details(r)
            if r.verdict in (NON_STRICT, FAIL, ERROR):
                ET.SubElement(case, "system-out").text = "\n".join(r.transcript)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, "unicode") + "\n"


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


FORMATS = {"text": to_text, "json": to_json, "junit": to_junit}

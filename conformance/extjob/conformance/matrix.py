"""``extjob conformance report A.json B.json ...``: several runs side by side.

Rows are cases (with the requirements they test), columns implementations
(one ``--format json`` report each); a cell is the verdict, and a failure's
cell links to its findings (expected, observed) and transcript. HTML for
people (one self-contained file, no script), Markdown for a PR comment.
"""

from __future__ import annotations

import argparse
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import ERROR, FAIL, NON_STRICT, PASS, SKIP

MARKS = {
    PASS: "✓ pass",
    NON_STRICT: "≈ non-strict",
    SKIP: "– skip",
    FAIL: "✗ fail",
    ERROR: "! error",
}
COLOURS = {
    PASS: "#d4f4d4",
    NON_STRICT: "#fff3c4",
    SKIP: "#eeeeee",
    FAIL: "#ffd0d0",
    ERROR: "#f0c8ff",
}


@dataclass(frozen=True)
class Column:
    name: str  #: the implementation, from the report's file name
    command: str
    passed: bool
    cases: dict[str, dict[str, Any]]  #: case id -> its result


def load(paths: Sequence[str]) -> list[Column]:
    """One column per JSON report; a file that is not one is a usage error."""
    columns = []
    for path in paths:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
            cases = {c["case_id"]: c for c in document["cases"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not an extjob conformance JSON report ({exc})") from None
        name = Path(path).name.removesuffix(".json")
        command = " ".join(document.get("command", []))
        columns.append(Column(name, command, bool(document.get("passed")), cases))
    return columns


def _rows(columns: list[Column]) -> list[tuple[str, str]]:
    """(case id, requirements) in the order the runs listed them."""
    seen: dict[str, str] = {}
    for column in columns:
        for case_id, case in column.cases.items():
            seen.setdefault(case_id, ", ".join(case.get("requirements", [])))
    return list(seen.items())


def _anchor(column: Column, case_id: str) -> str:
    return f"{column.name}--{case_id}".replace("/", "-")


def _failed(case: dict[str, Any] | None) -> bool:
    return case is not None and case["verdict"] in (FAIL, ERROR, NON_STRICT)


def to_markdown(columns: list[Column]) -> str:
    out = [
        "# extjob conformance: implementations side by side",
        "",
        "| case | requirements | " + " | ".join(c.name for c in columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for case_id, requirements in _rows(columns):
        cells = []
        for column in columns:
            case = column.cases.get(case_id)
            mark = MARKS[case["verdict"]] if case else "·"
            cells.append(f"[{mark}](#{_anchor(column, case_id)})" if _failed(case) else mark)
        out.append(f"| `{case_id}` | {requirements} | " + " | ".join(cells) + " |")
    for column in columns:
        for case_id, case in column.cases.items():
            if not _failed(case):
                continue
            out += ["", f'<a id="{_anchor(column, case_id)}"></a>', ""]
            out += [f"## {column.name}: {case['verdict']} `{case_id}`", "", case["title"], ""]
            out += [_finding_md(f) for f in case.get("findings", [])]
            if case.get("reason"):
                out += ["", "```", case["reason"].rstrip(), "```"]
            out += ["", "<details><summary>transcript</summary>", "", "```"]
            out += [*case.get("transcript", []), "```", "</details>"]
    return "\n".join(out) + "\n"


def _finding_md(finding: dict[str, Any]) -> str:
    text = f"- **{finding['requirement']}** [{finding['verdict']}] {finding['message']}"
    if finding.get("expected") or finding.get("observed"):
        text += f"\n  - expected: `{finding['expected']}`\n  - observed: `{finding['observed']}`"
    return text


def to_html(columns: list[Column]) -> str:
    e = html.escape
    head = "".join(f'<th title="{e(c.command)}">{e(c.name)}</th>' for c in columns)
    rows = []
    for case_id, requirements in _rows(columns):
        cells = []
        for column in columns:
            case = column.cases.get(case_id)
            if case is None:
                cells.append("<td>·</td>")
                continue
            verdict = case["verdict"]
            mark = e(MARKS[verdict])
            if _failed(case):
                mark = f'<a href="#{_anchor(column, case_id)}">{mark}</a>'
            cells.append(f'<td style="background:{COLOURS[verdict]}">{mark}</td>')
        rows.append(
            f"<tr><td><code>{e(case_id)}</code></td><td>{e(requirements)}</td>{''.join(cells)}</tr>"
        )
    details = []
    for column in columns:
        for case_id, case in column.cases.items():
            if not _failed(case):
                continue
            findings = "".join(
                f"<li><b>{e(f['requirement'])}</b> [{e(f['verdict'])}] {e(f['message'])}"
                + (
                    f"<br>expected: <code>{e(f['expected'])}</code>"
                    f"<br>observed: <code>{e(f['observed'])}</code>"
                    if f.get("expected") or f.get("observed")
                    else ""
                )
                + "</li>"
                for f in case.get("findings", [])
            )
            reason = f"<pre>{e(case['reason'])}</pre>" if case.get("reason") else ""
            transcript = e("\n".join(case.get("transcript", [])))
            stderr = e(case.get("stderr", "")[-2000:])
            details.append(
                f'<section id="{_anchor(column, case_id)}"><h2>{e(column.name)}: '
                f"{e(case['verdict'])} <code>{e(case_id)}</code></h2><p>{e(case['title'])}</p>"
                f"<ul>{findings}</ul>{reason}<details><summary>transcript</summary>"
                f"<pre>{transcript}</pre></details>"
                + (
                    f"<details><summary>stderr</summary><pre>{stderr}</pre></details>"
                    if stderr
                    else ""
                )
                + "</section>"
            )
    verdicts = "".join(
        f"<li>{e(c.name)}: {'PASS' if c.passed else 'FAIL'} <code>{e(c.command)}</code></li>"
        for c in columns
    )
    return (
        '<!doctype html><html lang="en"><meta charset="utf-8">'
        "<title>extjob conformance</title><style>"
        "body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
        "pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:40em}</style>"
        f"<h1>extjob conformance: implementations side by side</h1><ul>{verdicts}</ul>"
        f"<table><tr><th>case</th><th>requirements</th>{head}</tr>{''.join(rows)}</table>"
        f"{''.join(details)}</html>\n"
    )


FORMATS = {"html": to_html, "markdown": to_markdown}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="extjob conformance report",
        description="Render several --format json reports as one implementation x case matrix.",
    )
    parser.add_argument("reports", nargs="+", metavar="REPORT.json")
    parser.add_argument("--format", choices=sorted(FORMATS), default="markdown")
    parser.add_argument("--output", "-o", metavar="FILE")
    args = parser.parse_args(list(argv))
    try:
        columns = load(args.reports)
    except ValueError as exc:
        parser.exit(2, f"extjob conformance report: {exc}\n")
    text = FORMATS[args.format](columns)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0

"""The command line: selection, exit status, the three report formats."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from extjob.conformance import CASES, select
from extjob.conformance.cli import main

Worker = Callable[..., list[str]]


def test_any_prefix_topic_or_requirement_selects_cases() -> None:
    assert {c.id for c in select(["core/payload/"])} == {
        c.id for c in CASES if c.id.startswith("core/payload/")
    }
    assert "core/heartbeat/busy" in {c.id for c in select(["heartbeat"])}
    assert {c.id for c in select(["HB-2"])} == {c.id for c in CASES if "HB-2" in c.requirements}
    assert select(["no-such-case"]) == []


def test_every_case_id_is_unique_and_cites_spec_requirements() -> None:
    spec = (Path(__file__).parents[2] / "protocol" / "SPEC.md").read_text()
    assert len({c.id for c in CASES}) == len(CASES)
    for case in CASES:
        assert case.id.split("/")[0] == case.feature
        for requirement in case.requirements:
            assert f"**{requirement}**" in spec, (case.id, requirement)


def test_json_report_and_exit_status_zero_on_pass(tmp_path: Path, reference_worker: Worker) -> None:
    out = tmp_path / "report.json"
    code = main(
        [
            "conformance",
            "--only",
            "core/lifecycle/complete",
            "--format",
            "json",
            "-o",
            str(out),
            "--",
            *reference_worker(),
        ]
    )
    report = json.loads(out.read_text())
    assert code == 0 and report["passed"] is True
    assert report["summary"]["core"]["pass"] == 1
    [case] = report["cases"]
    assert case["case_id"] == "core/lifecycle/complete" and case["transcript"]


def test_junit_report_and_exit_status_one_on_failure(
    tmp_path: Path, reference_worker: Worker
) -> None:
    out = tmp_path / "junit.xml"
    code = main(
        [
            "conformance",
            "--only",
            "core/lifecycle/fail",
            "--format",
            "junit",
            "-o",
            str(out),
            "--",
            *reference_worker("--break", "exit-0-after-fail"),
        ]
    )
    assert code == 1
    failure = ET.parse(out).getroot().find("./testsuite/testcase/failure")
    assert failure is not None and failure.get("type") == "EXIT-2"


def test_text_report_shows_requirement_expected_observed_and_transcript(
    capsys: pytest.CaptureFixture[str], reference_worker: Worker, tmp_path: Path
) -> None:
    junit = tmp_path / "results" / "also.xml"  # a directory that does not exist yet
    code = main(
        [
            "conformance",
            "--only",
            "core/heartbeat/busy",
            "--junit",
            str(junit),
            "--",
            *reference_worker("--break", "no-heartbeat"),
        ]
    )
    text = capsys.readouterr().out
    assert code == 1
    assert ET.parse(junit).getroot().find("./testsuite/testcase/failure") is not None
    for needle in (
        "FAIL core/heartbeat/busy",
        "- HB-2 [fail]",
        "expected: a heartbeat",
        "observed:",
        'w→s {"type":"started"',
        "RESULT: FAIL",
    ):
        assert needle in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["conformance"], "no fixture command"),
        (["conformance", "--only", "nothing-matches", "--", sys.executable], "no case matches"),
        (["conformance", "--", "/no/such/fixture"], "cannot run"),
    ],
)
def test_usage_errors_exit_with_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_feature_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["conformance", "--features", "core,teleport", "--", sys.executable])
    assert exit_.value.code == 2
    assert "teleport" in capsys.readouterr().err


def test_time_factor_must_be_a_positive_number(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXTJOB_CONFORMANCE_TIME_FACTOR", "fast")
    assert main(["conformance", "--", sys.executable]) == 2
    assert "EXTJOB_CONFORMANCE_TIME_FACTOR" in capsys.readouterr().err


def test_the_guide_lists_every_case() -> None:
    guide = (Path(__file__).parents[1] / "README.md").read_text()
    assert [c.id for c in CASES if f"| `{c.id}` |" not in guide] == []


def test_heartbeat_interval_holds_a_worker_to_the_interval_it_really_uses(
    reference_worker: Worker,
) -> None:
    """A worker that ignores the advised 300 ms and beats every 1800 ms passes when declared."""
    late = reference_worker("--break", "late-heartbeat")
    only = ["--only", "core/heartbeat/busy", "--format", "json", "-o", os.devnull]
    assert main(["conformance", *only, "--", *late]) == 1
    assert main(["conformance", *only, "--heartbeat-interval", "1800", "--", *late]) == 0


def test_a_declared_heartbeat_interval_is_a_waiver_the_report_states(
    capsys: pytest.CaptureFixture[str], reference_worker: Worker
) -> None:
    """--heartbeat-interval waives HB-2's "use the payload's interval": the report says so."""
    argv = ["conformance", "--only", "core/lifecycle/complete", "--heartbeat-interval", "1800"]
    assert main([*argv, "--", *reference_worker()]) == 0
    assert "waived: HB-2: held to --heartbeat-interval 1800 ms" in capsys.readouterr().out


def test_report_renders_runs_side_by_side_with_failures_a_click_away(
    tmp_path: Path, reference_worker: Worker
) -> None:
    """The implementation x case matrix: a failure links to its findings and transcript."""
    only = ["--only", "core/lifecycle/complete", "--format", "json"]
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    assert main(["conformance", *only, "-o", str(good), "--", *reference_worker()]) == 0
    broken = reference_worker("--break", "linger")
    assert main(["conformance", *only[:2], "--json", str(bad), "--", *broken]) == 1
    page = tmp_path / "matrix.html"
    assert (
        main(["conformance", "report", str(good), str(bad), "--format", "html", "-o", str(page)])
        == 0
    )
    html = page.read_text()
    assert "<th" in html and ">good<" in html and ">bad<" in html
    assert (
        'href="#bad--core-lifecycle-complete"' in html
        and 'id="bad--core-lifecycle-complete"' in html
    )
    assert "EXIT-3" in html and "observed" in html and "closed by the worker" in html
    md = tmp_path / "matrix.md"
    assert main(["conformance", "report", str(good), str(bad), "-o", str(md)]) == 0
    assert "| `core/lifecycle/complete` |" in md.read_text()


def test_report_of_a_file_that_is_no_report_is_a_usage_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    with pytest.raises(SystemExit) as exit_:
        main(["conformance", "report", str(junk)])
    assert exit_.value.code == 2

"""``extjob validate``: per-line findings, exit codes, formats, hostile input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from extjob.protocol import SCHEMA_DIR
from extjob.validate import Validator

EXAMPLES = SCHEMA_DIR / "examples"
WORKERS = Path(__file__).resolve().parent / "workers"


def extjob(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "extjob.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=120,
    )


def line(type_: str, ts: int = 1, **fields: object) -> bytes:
    return json.dumps({"type": type_, "jobId": "j", "timestamp": ts, **fields}).encode() + b"\n"


def findings(
    path: Path, jobs: int = 1, from_file: bool = False, replaced_by: Path | None = None
) -> list[tuple[int | None, str]]:
    """``from_file``: worker processes read their batches from the file;
    ``replaced_by``: a file renamed over it once it is open."""
    with Validator(jobs=jobs) as validator, path.open("rb") as stream:
        if replaced_by:
            replaced_by.replace(path)
        chunks = iter(lambda: stream.read(1 << 16), b"")
        report = validator.check(str(path), chunks, stream if from_file else None)
    return [(f.line, f.problem.requirement) for f in report.findings]


def test_the_example_stream_is_valid() -> None:
    result = extjob("validate", str(EXAMPLES / "job.ndjson"))
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().endswith("11 line(s): valid")


def test_each_problem_is_one_line_with_file_line_requirement_and_field() -> None:
    path = EXAMPLES / "broken.ndjson"
    result = extjob("validate", str(path))
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{path}:1: warning: LIFE-1: type: 'heartbeat' before started (servers tolerate it, "
        "LIFE-2)",
        f"{path}:3: error: MSG-4: percent: 150 is greater than the maximum of 100",
        f"{path}:4: error: FRAME-2: not valid JSON: unexpected control character in string: "
        "line 1 column 77 (char 76)",
        f"{path}:5: error: STREAM-1: jobId: 'job_other'; stream is 'job_7f3a9c'",
        f"{path}:7: error: STREAM-3: type: 'heartbeat' after the terminal message",
        "1 stream(s), 7 line(s): 4 error(s), 1 warning(s) in 1 stream(s)",
    ]


def test_github_format_annotates_each_line() -> None:
    result = extjob("validate", "--format", "github", str(EXAMPLES / "broken.ndjson"))
    assert result.returncode == 1
    first, second = result.stdout.splitlines()[:2]
    assert first.startswith(f"::warning file={EXAMPLES / 'broken.ndjson'},line=1,title=LIFE-1::")
    assert second.startswith(f"::error file={EXAMPLES / 'broken.ndjson'},line=3,title=MSG-4::")


def test_junit_format_is_xml_with_one_case_per_stream() -> None:
    result = extjob(
        "validate",
        "--format",
        "junit",
        str(EXAMPLES / "job.ndjson"),
        str(EXAMPLES / "broken.ndjson"),
    )
    suite = ElementTree.fromstring(result.stdout)
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failure = suite.find("testsuite/testcase/failure")
    assert failure is not None and failure.get("message") == "4 error(s)"
    warnings = suite.find("testsuite/testcase/system-out")
    assert warnings is not None and "warning: LIFE-1" in (warnings.text or "")


def test_an_unreadable_file_is_a_usage_error_but_the_others_are_still_checked() -> None:
    result = extjob("validate", "/nonexistent/stream.ndjson", str(EXAMPLES / "broken.ndjson"))
    assert result.returncode == 2
    assert "cannot read /nonexistent/stream.ndjson" in result.stderr
    assert "STREAM-3" in result.stdout


def test_a_bad_option_is_a_usage_error() -> None:
    assert extjob("validate", "--format", "yaml").returncode == 2


def test_stdin_is_read_when_no_file_is_given() -> None:
    result = extjob("validate", stdin=line("started") + line("completed", 2))
    assert result.returncode == 0, result.stdout


def test_stream_2_an_empty_file_is_an_empty_stream(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ndjson"
    empty.write_bytes(b"")
    assert findings(empty) == [(None, "STREAM-2")]


def test_frame_3_garbage_gets_an_error_per_line_and_the_rest_is_still_checked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "garbage.ndjson"
    path.write_bytes(
        line("started")
        + bytes(range(256)).replace(b"\n", b"")
        + b"\n"
        + b'{"type":"log","jobId":"j","timestamp":2,"level":"info","message":"\xff"}\n'
        + b"\n   \n"  # blank lines are ignored (FRAME-3)
        + line("progress", 3, percent=-5)
        + line("completed", 4)
        + line("heartbeat", 5)
    )
    assert findings(path) == [(2, "FRAME-2"), (3, "FRAME-2"), (6, "MSG-4"), (8, "STREAM-3")]


def test_limit_1_a_100_mb_line_is_one_error_and_the_next_lines_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "huge.ndjson"
    with path.open("wb") as out:
        out.write(line("started"))
        for _ in range(100):
            out.write(b"x" * (1 << 20))
        out.write(b"\n" + line("progress", 2, percent=101) + line("completed", 3))
    assert findings(path) == [(2, "LIMIT-1"), (3, "MSG-4")]


def test_a_last_line_without_newline_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "tail.ndjson"
    path.write_bytes(line("started") + line("log", 2, level="loud", message="m").rstrip())
    assert findings(path) == [(2, "MSG-6")]


def long_stream(path: Path) -> None:
    with path.open("wb") as out:
        out.write(line("started", seq=1))
        for i in range(2, 20_000):
            if i % 997 == 0:
                out.write(line("progress", i, seq=i, percent=500))  # schema error
            elif i % 1999 == 0:
                out.write(line("log", i - 10_000, seq=i, level="info", message="x"))  # STREAM-5
            else:
                out.write(line("log", i, seq=i, level="info", message=f"line {i}"))
        out.write(line("completed", 30_000, seq=20_000))
        out.write(b"\r\n" + b"x" * 70_000 + b"\n\n" + line("heartbeat", 30_001).rstrip())


@pytest.mark.parametrize("jobs", [2, 3])
@pytest.mark.parametrize("from_file", [False, True], ids=["through-pipes", "from-the-file"])
def test_worker_processes_find_exactly_what_one_process_finds(
    tmp_path: Path, jobs: int, from_file: bool
) -> None:
    path = tmp_path / "long.ndjson"
    long_stream(path)
    single = findings(path)
    assert len(single) == 32
    assert findings(path, jobs=jobs, from_file=from_file) == single


def test_a_file_renamed_over_the_one_read_is_not_what_the_workers_check(tmp_path: Path) -> None:
    path, other = tmp_path / "long.ndjson", tmp_path / "other.ndjson"
    long_stream(path)
    single = findings(path)
    # The same lines but for a level: an error on each log line, if checked.
    other.write_bytes(path.read_bytes().replace(b'"info"', b'"loud"'))
    assert findings(path, jobs=2, from_file=True, replaced_by=other) == single


def capture_original_python_worker(tmp_path: Path) -> Path:
    """What the original Python wrapper really sends, captured on a real socket."""
    socket_path = tmp_path / "w.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(socket_path))
        listener.listen(1)
        payload = {"jobId": "j_1", "name": "orig", "data": {"steps": 2}}
        payload["socketPath"] = str(socket_path)
        worker = subprocess.Popen(
            [sys.executable, str(WORKERS / "original_python_worker.py")], stdin=subprocess.PIPE
        )
        assert worker.stdin is not None
        worker.stdin.write(json.dumps(payload).encode() + b"\n")
        worker.stdin.close()
        listener.settimeout(30)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            captured = b"".join(iter(lambda: conn.recv(65536), b""))
        assert worker.wait(timeout=30) == 0
    path = tmp_path / "original-python.ndjson"
    path.write_bytes(captured)
    return path


def test_life_2_the_original_python_wrappers_heartbeat_first_is_a_warning_in_every_format(
    tmp_path: Path,
) -> None:
    path = capture_original_python_worker(tmp_path)
    assert json.loads(path.read_bytes().splitlines()[0])["type"] == "heartbeat"

    text = extjob("validate", str(path))
    assert text.returncode == 0, text.stdout  # servers tolerate it: not a failure
    assert text.stdout.splitlines() == [
        f"{path}:1: warning: LIFE-1: type: 'heartbeat' before started (servers tolerate it, "
        "LIFE-2)",
        "1 stream(s), 5 line(s): 0 error(s), 1 warning(s) in 1 stream(s)",
    ]
    assert extjob("validate", "--strict", str(path)).returncode == 1

    report = extjob("validate", "--format", "json", str(path))
    assert report.returncode == 0
    document = json.loads(report.stdout)
    assert (document["errors"], document["warnings"]) == (0, 1)
    first = document["streams"][0]["findings"][0]
    assert (first["line"], first["severity"], first["requirement"]) == (1, "warning", "LIFE-1")

    github = extjob("validate", "--format", "github", str(path))
    assert github.returncode == 0
    assert github.stdout.startswith(f"::warning file={path},line=1,title=LIFE-1::")

    junit = extjob("validate", "--format", "junit", str(path))
    assert junit.returncode == 0
    suite = ElementTree.fromstring(junit.stdout)
    assert (suite.get("tests"), suite.get("failures")) == ("1", "0")
    assert "warning: LIFE-1" in (suite.findtext("testsuite/testcase/system-out") or "")


@pytest.mark.parametrize(
    ("jobs", "from_file"), [(1, False), (2, False), (2, True)], ids=["1", "2-pipes", "2-file"]
)
def test_stream_4_replays_after_a_reconnect_are_compared_line_by_line(
    tmp_path: Path, jobs: int, from_file: bool
) -> None:
    # A run of replays is ordinary among itself but not after the lines it
    # replays: the stream rules take it line by line, comparing each replay.
    logs = [line("log", i, seq=i, level="info", message=f"m{i}") for i in range(2, 3_000)]
    hello = line("hello", 3_000, token="t" * 22, protocolVersion=1, features=["replay"], pid=1)
    replays = logs[1_000:]
    replays[500] = line("log", 1_502, seq=1_502, level="info", message="other")
    path = tmp_path / "replayed.ndjson"
    path.write_bytes(
        b"".join(
            [line("started", seq=1), *logs, hello, *replays, line("completed", 3_001, seq=3_000)]
        )
    )
    assert findings(path, jobs=jobs, from_file=from_file) == [(1 + 2_998 + 1 + 501, "STREAM-4")]

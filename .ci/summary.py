"""Print one closing line for the whole CI run: 'N passed, N failed, N skipped'.

tox runs several test runners (pytest, go test, cargo test, the conformance
suite); each leaves its results in .tox/results/: JUnit XML files, and the
text of `go test -v` and `cargo test`. This adds them up so the run ends with
one line that counts all.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from xml.etree import ElementTree

GO_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): ")
CARGO_RESULT = re.compile(r"^test .+ \.\.\. (ok|FAILED|ignored)$")
CARGO_VERDICTS = {"ok": "PASS", "FAILED": "FAIL", "ignored": "SKIP"}


def count_junit(path: Path) -> tuple[int, int, int]:
    root = ElementTree.parse(path).getroot()
    cases = root.iter("testcase")
    passed = failed = skipped = 0
    for case in cases:
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def count_text(path: Path) -> tuple[int, int, int]:
    found = []
    for line in path.read_text().splitlines():
        if m := GO_RESULT.match(line):
            found.append(m.group(1))
        elif m := CARGO_RESULT.match(line):
            found.append(CARGO_VERDICTS[m.group(1)])
    return found.count("PASS"), found.count("FAIL"), found.count("SKIP")


def main(results: Path) -> int:
    totals = [0, 0, 0]
    for path in sorted(results.glob("*")):
        counts = count_junit(path) if path.suffix == ".xml" else count_text(path)
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    passed, failed, skipped = totals
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else ".tox/results")))

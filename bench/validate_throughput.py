"""Benchmark: ``extjob validate`` throughput against plain ``jsonschema``.

Validates one stream of N lines (progress, logs, heartbeats, as a busy
worker sends them) with extjob's validator, and the same lines with plain
``jsonschema`` (the envelope schema, one line at a time) in the same run;
prints both rates and their ratio. Plain jsonschema is slow, so it is timed
on the first lines only: a rate, not a total. Targets (issue 2): >= 10x
plain jsonschema, >= 300,000 lines/s on 2 cores.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

from extjob.protocol import SCHEMA_DIR
from extjob.validate import Validator


def write_stream(path: Path, lines: int) -> None:
    base = 1_764_028_800_000
    with path.open("w") as out:
        head = {"protocolVersion": 1, "features": ["auth", "replay"], "pid": 1}
        out.write(
            json.dumps(
                {"type": "hello", "jobId": "j", "timestamp": base} | head | {"token": "k" * 22}
            )
            + "\n"
        )
        out.write(json.dumps({"type": "started", "jobId": "j", "timestamp": base, "seq": 1}) + "\n")
        seq = 1
        for i in range(lines - 3):
            common = {"jobId": "j", "timestamp": base + i}
            if i % 10 == 9:
                out.write(json.dumps({"type": "heartbeat", **common}) + "\n")
                continue
            seq += 1
            if i % 10 < 6:
                body = {
                    "type": "progress",
                    "seq": seq,
                    "percent": i * 100 / lines,
                    "message": f"step {i}",
                }
            else:
                body = {
                    "type": "log",
                    "seq": seq,
                    "level": "info",
                    "message": f"line {i}",
                    "data": {"i": i},
                }
            out.write(json.dumps(body | common) + "\n")
        end = {"type": "completed", "jobId": "j", "timestamp": base + lines, "seq": seq + 1}
        out.write(json.dumps(end | {"result": {"ok": True}}) + "\n")


def plain_jsonschema_rate(path: Path, sample: int) -> float:
    schemas = [json.loads(p.read_text()) for p in SCHEMA_DIR.rglob("*.schema.json")]
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas)
    envelope = json.loads((SCHEMA_DIR / "worker-message.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(envelope, registry=registry)
    with path.open() as stream:
        lines = [next(stream) for _ in range(sample)]
    start = time.perf_counter()
    for line in lines:
        validator.validate(json.loads(line))
    return sample / (time.perf_counter() - start)


def extjob_rate(path: Path, jobs: int) -> tuple[float, int]:
    start = time.perf_counter()
    with Validator(jobs=jobs) as validator, path.open("rb") as stream:
        report = validator.check(str(path), iter(lambda: stream.read(1 << 20), b""))
    elapsed = time.perf_counter() - start
    assert not report.findings, report.findings[:3]
    return report.lines / elapsed, report.lines


def run(smoke: bool = False) -> list[str]:
    lines = 20_000 if smoke else 1_000_000
    sample = 1_000 if smoke else 10_000
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.ndjson"
        write_stream(path, lines)
        baseline = plain_jsonschema_rate(path, sample)
        single, _ = extjob_rate(path, 1)
        parallel, checked = extjob_rate(path, jobs)
    return [
        f"validate: {checked:,} lines",
        f"  plain jsonschema       {baseline:12,.0f} lines/s (first {sample:,} lines)",
        f"  extjob, 1 process      {single:12,.0f} lines/s  {single / baseline:5.1f}x",
        f"  extjob, {jobs} processes    {parallel:12,.0f} lines/s  {parallel / baseline:5.1f}x"
        f"   (target: >= 10x and >= 300,000 lines/s)",
    ]


if __name__ == "__main__":
    print("\n".join(run(smoke="--smoke" in sys.argv)))

"""Benchmark: ``extjob validate`` throughput against the compiled schema's own limit.

Validates one stream of N lines (progress, logs, heartbeats, as a busy
worker sends them) with extjob's validator, with 1 and with 2 processes,
timed as a whole (start-up and the ordered stream rules included). In the
same run, the limit: every line parsed by orjson and checked by the compiled
(jsonschema-rs) schema of its type, in one loop of one process, with no
stream rules and no reporting; and, for scale, plain ``jsonschema`` (the
envelope schema, one line at a time) on the first lines only, a rate.
Targets (issue 15), on a 300,000-line stream: >= 600,000 lines/s with one
process and >= 900,000 with two.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import jsonschema_rs
import orjson
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


def compiled_schema_rate(path: Path) -> float:
    """The limit: orjson and the compiled schema of each line's type, nothing else."""
    schemas = [json.loads(p.read_text()) for p in SCHEMA_DIR.rglob("*.schema.json")]
    registry = jsonschema_rs.Registry([(s["$id"], s) for s in schemas])
    by_type = {
        p.name.removesuffix(".schema.json"): jsonschema_rs.Draft202012Validator(
            json.loads(p.read_text()), registry=registry
        )
        for p in (SCHEMA_DIR / "messages").glob("*.schema.json")
    }
    loads = orjson.loads
    start = time.perf_counter()
    with path.open("rb") as stream:
        count = 0
        for line in stream:
            message = loads(line)
            assert by_type[message["type"]].is_valid(message)
            count += 1
    return count / (time.perf_counter() - start)


def extjob_rate(path: Path, jobs: int) -> tuple[float, int]:
    start = time.perf_counter()
    with Validator(jobs=jobs) as validator, path.open("rb") as stream:
        report = validator.check(str(path), iter(lambda: stream.read(1 << 20), b""))
    elapsed = time.perf_counter() - start
    assert not report.findings, report.findings[:3]
    return report.lines / elapsed, report.lines


def run(smoke: bool = False) -> list[str]:
    lines = 20_000 if smoke else 300_000
    sample = 1_000 if smoke else 10_000
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.ndjson"
        write_stream(path, lines)
        limit = compiled_schema_rate(path)
        baseline = plain_jsonschema_rate(path, sample)
        single, _ = extjob_rate(path, 1)
        parallel, checked = extjob_rate(path, jobs)
    out = [
        f"validate: {checked:,} lines, whole process",
        f"  plain jsonschema       {baseline:12,.0f} lines/s (first {sample:,} lines)",
        f"  compiled schema limit  {limit:12,.0f} lines/s (orjson + jsonschema-rs, 1 process)",
        f"  extjob, 1 process      {single:12,.0f} lines/s  {single / limit:4.0%} of the limit",
        f"  extjob, {jobs} processes    {parallel:12,.0f} lines/s  {parallel / limit:4.0%} of it",
    ]
    if not smoke:
        met = single >= 600_000 and parallel >= 900_000
        out.append(
            f"  target >= 600,000 (1 process) and >= 900,000 ({jobs}): "
            + ("met" if met else "MISSED")
        )
    return out


if __name__ == "__main__":
    print("\n".join(run(smoke="--smoke" in sys.argv)))

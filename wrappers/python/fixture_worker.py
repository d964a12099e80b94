"""The fixture worker of SPEC.md section 11, built only on extjob_worker's public API.

Run as ``python wrappers/python/fixture_worker.py``; the scenario comes from
the payload's ``data`` (FIX-1). Nothing is printed on standard output (FIX-3).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from extjob_worker import LEVELS, Job, run_job


def complete(job: Job, params: dict[str, Any]) -> Any:
    job.progress(50, "halfway")
    return {"ok": True}


def echo(job: Job, params: dict[str, Any]) -> Any:
    text = params.get("text", "")
    job.log("info", text)
    job.progress(50, text)
    return params.get("value")


def fail(job: Job, params: dict[str, Any]) -> Any:
    raise RuntimeError(params.get("message", "fixture failure"))


def crash(job: Job, params: dict[str, Any]) -> Any:
    os._exit(params.get("code", 3))  # no terminal message, no cleanup: a crash


def sleep(job: Job, params: dict[str, Any]) -> Any:
    ms = params.get("ms", 1000)
    time.sleep(ms / 1000)
    return {"slept": ms}


def progress(job: Job, params: dict[str, Any]) -> Any:
    count = params.get("count", 100)
    for i in range(1, count + 1):
        job.progress(i * 100 / count, f"step {i}")
    return {"count": count}


def logs(job: Job, params: dict[str, Any]) -> Any:
    count = params.get("count", 10)
    interval = params.get("intervalMs", 0) / 1000
    for i in range(1, count + 1):
        if i > 1 and interval:
            time.sleep(interval)
        job.log("info", f"line {i}", i=i)
    return {"count": count}


def levels(job: Job, params: dict[str, Any]) -> Any:
    for level in LEVELS:
        job.log(level, level, level=level)
    return None


def cancel(job: Job, params: dict[str, Any]) -> Any:
    if job.wait_for_cancel(params.get("ms", 30000) / 1000):
        job.log("info", "cancel requested")
        raise RuntimeError("cancelled")
    return {"cancelled": False}


def checkpoint(job: Job, params: dict[str, Any]) -> Any:
    if job.has_checkpoint:
        return {"resumedFrom": job.checkpoint_data}
    job.checkpoint(params.get("value", {"step": 1}))
    raise RuntimeError("checkpoint saved")


def large(job: Job, params: dict[str, Any]) -> Any:
    return "x" * params.get("bytes", 1048576)


SCENARIOS: dict[str, Callable[[Job, dict[str, Any]], Any]] = {
    f.__name__: f
    for f in (complete, echo, fail, crash, sleep, progress, logs, levels, cancel, checkpoint, large)
}


def main(job: Job) -> Any:
    params = job.data if isinstance(job.data, dict) else {}
    name = params.get("scenario", "complete")
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (FIX-2)")
    return SCENARIOS[name](job, params)


if __name__ == "__main__":
    run_job(main)

"""Shared pieces of the cluster benchmarks: when each worker was spawned, percentiles."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import extjob.server.server as server_module

TRUE = "/bin/true"  # a worker that is gone at once: what is measured is the server


@contextmanager
def spawn_clock() -> Iterator[dict[str, float]]:
    """``{job id: time.time() when its worker process had been started}``."""
    spawned: dict[str, float] = {}
    original: Callable[..., Any] = server_module.spawn

    def timed(*args: Any, **kwargs: Any) -> Any:
        child = original(*args, **kwargs)
        spawned[kwargs["env"]["EXTJOB_JOB_ID"]] = time.time()
        return child

    server_module.spawn = timed  # type: ignore[assignment]
    try:
        yield spawned
    finally:
        server_module.spawn = original  # type: ignore[assignment]


def percentiles(values_ms: list[float]) -> tuple[float, float]:
    ordered = sorted(values_ms)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return statistics.median(ordered), p99


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"

"""Prometheus text exposition (format 0.0.4) for ``GET /metrics``.

Small enough to write by hand: counters and gauges come from the job server,
the only thing measured here is how long each API request took.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

# Seconds. API requests are small and local: most land in the first buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RequestLatency:
    """A histogram of request durations by method, route and status."""

    def __init__(self) -> None:
        self._buckets: dict[tuple[str, str, int], list[int]] = defaultdict(
            lambda: [0] * len(LATENCY_BUCKETS)
        )
        self._sum: dict[tuple[str, str, int], float] = defaultdict(float)
        self._count: dict[tuple[str, str, int], int] = defaultdict(int)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        buckets = self._buckets[key]
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                buckets[i] += 1
        self._sum[key] += seconds
        self._count[key] += 1

    def lines(self) -> Iterable[str]:
        name = "extjob_http_request_duration_seconds"
        yield f"# HELP {name} Time to answer an API request (streams excluded)."
        yield f"# TYPE {name} histogram"
        for key in sorted(self._count):
            method, route, status = key
            labels = f'method="{method}",route="{_escape(route)}",status="{status}"'
            for bound, count in zip(LATENCY_BUCKETS, self._buckets[key], strict=True):
                yield f'{name}_bucket{{{labels},le="{bound}"}} {count}'
            yield f'{name}_bucket{{{labels},le="+Inf"}} {self._count[key]}'
            yield f"{name}_sum{{{labels}}} {self._sum[key]:.6f}"
            yield f"{name}_count{{{labels}}} {self._count[key]}"


def metric(
    name: str, kind: str, help_text: str, samples: Mapping[tuple[tuple[str, str], ...], float]
) -> Iterable[str]:
    """One metric family: ``samples`` maps label pairs to values."""
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    for labels, value in sorted(samples.items()):
        rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
        yield f"{name}{{{rendered}}} {value:g}" if rendered else f"{name} {value:g}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

"""Prometheus text exposition (format 0.0.4) for ``GET /metrics``.

Small enough to write by hand: counters and gauges come from the job server;
measured here are how long each API request took and how long an event
waited for the SSE streams.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

# Seconds. API requests are small and local: most land in the first buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Observations counted in cumulative buckets, with their sum."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.buckets = [0] * len(bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.buckets[i] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> Iterable[str]:
        """The samples (no HELP or TYPE); ``labels`` rendered, without braces."""
        sep = "," if labels else ""
        for bound, count in zip(self.bounds, self.buckets, strict=True):
            yield f'{name}_bucket{{{labels}{sep}le="{bound}"}} {count}'
        yield f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}'
        braced = f"{{{labels}}}" if labels else ""
        yield f"{name}_sum{braced} {self.sum:.6f}"
        yield f"{name}_count{braced} {self.count}"


class RequestLatency:
    """A histogram of request durations by method, route and status."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, int], Histogram] = defaultdict(
            lambda: Histogram(LATENCY_BUCKETS)
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._by_key[(method, route, status)].observe(seconds)

    def lines(self) -> Iterable[str]:
        name = "extjob_http_request_duration_seconds"
        yield f"# HELP {name} Time to answer an API request (streams excluded)."
        yield f"# TYPE {name} histogram"
        for key in sorted(self._by_key):
            method, route, status = key
            labels = f'method="{method}",route="{_escape(route)}",status="{status}"'
            yield from self._by_key[key].lines(name, labels)


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

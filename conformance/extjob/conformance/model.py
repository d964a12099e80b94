"""What the suite produces: findings, graded verdicts, case results; its time budget."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from extjob.protocol import heartbeat_interval_ms

#: Multiplies every deadline and tolerance of the suite, for slow machines.
TIME_FACTOR_ENV = "EXTJOB_CONFORMANCE_TIME_FACTOR"

# Graded verdicts, best to worst (after Autobahn). An *error* is a fault of the
# harness or its environment and is never blamed on the implementation.
PASS = "pass"
NON_STRICT = "non-strict"  # only SHOULD-level rules were broken
SKIP = "skip"  # the case needs a feature the wrapper does not claim
FAIL = "fail"  # a MUST-level rule was broken
ERROR = "error"
VERDICTS = (PASS, NON_STRICT, SKIP, FAIL, ERROR)


@dataclass(frozen=True)
class Finding:
    """One rule the worker broke, with the evidence."""

    requirement: str
    verdict: str  #: FAIL for a MUST, NON_STRICT for a SHOULD
    message: str
    expected: str = ""
    observed: str = ""


@dataclass
class CaseResult:
    case_id: str
    title: str
    feature: str
    requirements: tuple[str, ...]
    verdict: str
    duration_s: float = 0.0
    reason: str = ""  #: why it was skipped, or the harness error
    findings: list[Finding] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)
    stderr: str = ""


def fail(requirement: str, message: str, expected: object = "", observed: object = "") -> Finding:
    """A MUST-level rule broken."""
    return Finding(requirement, FAIL, message, show(expected), show(observed))


def nonstrict(
    requirement: str, message: str, expected: object = "", observed: object = ""
) -> Finding:
    """A SHOULD-level rule broken."""
    return Finding(requirement, NON_STRICT, message, show(expected), show(observed))


def show(value: object, limit: int = 300) -> str:
    """A value as compact JSON for a report, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def worst(findings: list[Finding]) -> str:
    if any(f.verdict == FAIL for f in findings):
        return FAIL
    return NON_STRICT if findings else PASS


#: Every upper bound is widened by this fraction of itself ...
RELATIVE_SLACK = 0.25
#: ... and by this much for the scheduler (ms), before the time factor.
SCHEDULER_SLACK_MS = 250
#: A lower bound is narrowed to this fraction of itself (timer granularity);
#: a loaded machine only makes things later, so it is not scaled.
LOWER_FRACTION = 0.8


class NotInjected(Exception):
    """The harness could not inject a case's fault: an *error*, not the worker's fault."""


@dataclass(frozen=True)
class Timing:
    """The suite's clock: short intervals for speed, bounds relative to the rule.

    The harness advises ``heartbeat_timeout_ms / 3`` (HB-1) as the heartbeat
    interval. ``worker_interval_ms`` is for a wrapper that ignores the advice
    (``--heartbeat-interval``: HB-2's "use the payload's interval" is then
    waived, and the report says so). A bound of the spec becomes
    :meth:`upper` or :meth:`lower`; every deadline is multiplied by ``factor``.
    """

    factor: float = 1.0
    heartbeat_timeout_ms: int = 900  #: so the advised interval is 300 ms (HB-1)
    worker_interval_ms: int | None = None

    @classmethod
    def from_env(cls, worker_interval_ms: int | None = None) -> Timing:
        raw = os.environ.get(TIME_FACTOR_ENV, "1")
        try:
            factor = float(raw)
        except ValueError:
            raise ValueError(f"{TIME_FACTOR_ENV} must be a number, not {raw!r}") from None
        if factor <= 0:
            raise ValueError(f"{TIME_FACTOR_ENV} must be positive, not {raw!r}")
        return cls(factor=factor, worker_interval_ms=worker_interval_ms)

    @property
    def advised_interval_ms(self) -> int:
        return heartbeat_interval_ms(self.heartbeat_timeout_ms)

    @property
    def interval_ms(self) -> int:
        """The interval the worker is held to."""
        return self.worker_interval_ms or self.advised_interval_ms

    @property
    def waivers(self) -> list[str]:
        """What the suite was told not to hold the worker to."""
        if self.worker_interval_ms is None:
            return []
        return [
            f"HB-2: held to --heartbeat-interval {self.worker_interval_ms} ms instead of "
            f"the payload's heartbeatIntervalMs {self.advised_interval_ms} ms"
        ]

    def upper(self, bound_ms: float) -> float:
        """The most a measured time may be when the spec says "within ``bound_ms``"."""
        return (bound_ms * (1 + RELATIVE_SLACK) + SCHEDULER_SLACK_MS) * self.factor

    def lower(self, bound_ms: float) -> float:
        """The least a measured time may be when the spec says "after ``bound_ms``"."""
        return bound_ms * LOWER_FRACTION

    def explain(self, bound_ms: float) -> str:
        return (
            f"{bound_ms:.0f} ms (+{RELATIVE_SLACK:.0%} +{SCHEDULER_SLACK_MS} ms"
            f"{f' × {self.factor:g}' if self.factor != 1 else ''}: ≤ {self.upper(bound_ms):.0f} ms)"
        )

    @property
    def startup_ms(self) -> float:
        """START-1 allowance: an interpreter on a loaded machine needs more than the
        short ``heartbeat_timeout_ms`` the suite uses for speed."""
        return max(self.heartbeat_timeout_ms, 5000) * self.factor

    def s(self, seconds: float) -> float:
        """A harness deadline, scaled."""
        return seconds * self.factor

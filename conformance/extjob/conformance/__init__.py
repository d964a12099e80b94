"""``extjob conformance``: tells a wrapper author exactly what is wrong.

Theory of operation. The suite plays the server. For each case of the
catalogue (:mod:`.cases`) it opens a socket (:mod:`.fakeserver`) and spawns
the author's fixture worker with a payload whose ``data`` names a scenario of
SPEC section 11 (:mod:`.process`). While the worker runs, the case's drive
injects faults (:mod:`.drives`) and every line in both directions is recorded
with its monotonic time (:mod:`.transcript`). Then the record is judged: each
line against the JSON Schemas and the stream against the stream rules (both
by the protocol core, never restated here); timing, exit status and
negotiation (:mod:`.checks`); and what the scenario and the faults require
(:mod:`.expectations`). :mod:`.runner` runs cases in parallel;
:mod:`.report` writes JSON, JUnit or text.
"""

from . import coverage
from .cases import CASES, Case, select
from .model import ERROR, FAIL, NON_STRICT, PASS, SKIP, CaseResult, Finding, Timing
from .runner import run_cases

__all__ = [
    "CASES", "ERROR", "FAIL", "NON_STRICT", "PASS", "SKIP",
    "Case", "CaseResult", "Finding", "Timing", "coverage", "run_cases", "select",
]  # fmt: skip

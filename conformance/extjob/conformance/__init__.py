"""``extjob conformance``: tells a wrapper author exactly what is wrong.

Theory of operation. The suite plays the server. For each case of the
catalogue (:mod:`.cases`) it opens a socket (:mod:`.fakeserver`), spawns the
author's fixture worker with a payload whose ``data`` names a scenario of
SPEC section 11 (:mod:`.process`), injects the case's faults while recording
every line in both directions with monotonic times (:mod:`.transcript`),
injecting faults (:mod:`.drives`), then judges the record: each line against the JSON Schemas and the stream
against the stream rules (both by the protocol core, never restated here),
timing, exit status and negotiation (:mod:`.checks`), and what the case's
scenario and faults require (:mod:`.expectations`). :mod:`.runner` runs
cases in parallel; :mod:`.report` writes JSON, JUnit or text.
"""

from .cases import CASES, Case, select
from .model import ERROR, FAIL, NON_STRICT, PASS, SKIP, CaseResult, Finding, Timing
from .runner import run_cases

__all__ = [
    "CASES", "ERROR", "FAIL", "NON_STRICT", "PASS", "SKIP",
    "Case", "CaseResult", "Finding", "Timing", "run_cases", "select",
]  # fmt: skip

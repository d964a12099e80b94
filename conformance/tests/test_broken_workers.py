"""Trusting the suite: each broken worker is caught, by the right requirement.

Every worker here is the reference worker with one rule broken
(``--break RULE``). All of them run once, in parallel, in one fixture; each
test then looks at the case that must catch its worker.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from extjob.conformance import CASES, FAIL, NON_STRICT, CaseResult, Timing, run_cases

ALL_FEATURES = frozenset({"core", "auth", "replay", "control", "spool", "checkpoint"})

#: break → (the case that must catch it, the requirement it must be charged to)
CAUGHT_BY = {
    "no-heartbeat": ("core/heartbeat/busy", "HB-2"),
    "late-heartbeat": ("core/heartbeat/busy", "HB-2"),
    "heartbeat-first": ("core/lifecycle/complete", "LIFE-1"),
    "missing-field": ("core/lifecycle/complete", "MSG-4"),
    "wrong-job-id": ("core/lifecycle/complete", "MSG-1"),
    "after-terminal": ("core/lifecycle/complete", "STREAM-3"),
    "exit-0-after-fail": ("core/lifecycle/fail", "EXIT-2"),
    "linger": ("core/lifecycle/complete", "EXIT-3"),
    "seconds-timestamp": ("core/lifecycle/complete", "MSG-1"),
    "bad-escaping": ("core/framing/escaping", "FRAME-2"),
    "stdout-noise": ("core/lifecycle/complete", "FIX-3"),
    "no-env": ("core/payload/env", "ENV-2"),
    "connect-on-bad-payload": ("core/payload/malformed", "PAY-6"),
    "no-reconnect": ("core/reconnect/drop", "RECONNECT-1"),
    "no-started-again": ("core/reconnect/restart", "LIFE-3"),
    "no-hello": ("auth/hello/first", "AUTH-2"),
    "no-wait-welcome": ("auth/hello/slow-welcome", "AUTH-2"),
    "no-seq": ("replay/seq/all-sequenced", "REPLAY-1"),
    "no-replay": ("replay/restart/unacked", "REPLAY-4"),
    "replay-covered": ("replay/drop/lastseq", "REPLAY-4"),
    "no-ack-timeout": ("replay/terminal/ack-timeout", "REPLAY-3"),
    "ignore-cancel": ("control/cancel/requested", "CANCEL-3"),
    "stop-reading": ("control/read/flood", "CTRL-6"),
    "no-spool": ("spool/give-up/result", "SPOOL-2"),
    "lose-checkpoint": ("checkpoint/resume", "CKPT-2"),
}
#: break → (case, requirement) for a SHOULD broken: reported, not failed.
NOTED_BY = {
    "eager-heartbeat": ("core/heartbeat/busy", "HB-2"),
}


@pytest.fixture(scope="module")
def caught(reference_worker: Callable[..., list[str]]) -> dict[str, CaseResult]:
    async def all_of_them() -> dict[str, CaseResult]:
        limit = asyncio.Semaphore(4)

        async def one(rule: str) -> tuple[str, CaseResult]:
            case_id, _ = (CAUGHT_BY | NOTED_BY)[rule]
            async with limit:
                case = next(c for c in CASES if c.id == case_id)
                [result] = await run_cases(
                    [case],
                    reference_worker("--break", rule),
                    ALL_FEATURES,
                    Timing.from_env(),
                    jobs=1,
                )
            return rule, result

        return dict(await asyncio.gather(*(one(rule) for rule in CAUGHT_BY | NOTED_BY)))

    return asyncio.run(all_of_them())


def test_every_break_of_the_reference_worker_is_tested() -> None:
    source = (Path(__file__).parent / "workers" / "reference_worker.py").read_text()
    block = source[source.index("BREAKS = {") : source.index("}\n")]
    assert set(re.findall(r'^    "([a-z0-9-]+)":', block, re.M)) == set(CAUGHT_BY | NOTED_BY)


@pytest.mark.parametrize("rule", sorted(CAUGHT_BY))
def test_broken_worker_is_caught_by_the_right_requirement(
    caught: dict[str, CaseResult], rule: str
) -> None:
    _, requirement = CAUGHT_BY[rule]
    result = caught[rule]
    report = "\n".join([result.reason, *(str(f) for f in result.findings), *result.transcript])
    assert result.verdict == FAIL, report
    assert requirement in {f.requirement for f in result.findings}, report


@pytest.mark.parametrize("rule", sorted(NOTED_BY))
def test_a_broken_should_is_non_strict_not_fail(caught: dict[str, CaseResult], rule: str) -> None:
    _, requirement = NOTED_BY[rule]
    result = caught[rule]
    assert result.verdict == NON_STRICT, [str(f) for f in result.findings]
    assert {f.requirement for f in result.findings} == {requirement}

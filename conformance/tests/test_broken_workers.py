"""Trusting the suite: each broken worker is caught, by the right requirement.

Every worker here is the reference worker with one rule broken
(``--break RULE``). All of them run once, in parallel, in one fixture; each
test then looks at the case that must catch its worker.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from extjob.conformance import CASES, FAIL, NON_STRICT, CaseResult, Timing, coverage, run_cases

ALL_FEATURES = frozenset({"core", "auth", "replay", "control", "spool", "checkpoint"})

#: break → (the case that must catch it, the requirement it must be charged to)
CAUGHT_BY = {
    "no-heartbeat": ("core/heartbeat/busy", "HB-2"),
    "late-heartbeat": ("core/heartbeat/busy", "HB-2"),
    "conn-per-message": ("core/heartbeat/busy", "HB-2"),
    "linger": ("core/lifecycle/complete", "EXIT-3"),
    "slow-start": ("core/lifecycle/complete", "START-1"),
    "stamp-at-creation": ("core/reconnect/logs-during-outage", "STREAM-5"),
    "no-env": ("core/payload/env", "ENV-2"),
    "donkeylabs-first": ("core/payload/env", "ENV-2"),
    "env-only-when-empty": ("core/payload/partial", "ENV-2"),
    "strict-payload": ("core/payload/unknown-fields", "PAY-5"),
    "connect-on-bad-payload": ("core/payload/malformed", "PAY-6"),
    "array-payload-as-empty": ("core/payload/not-object", "PAY-6"),
    "unix-only": ("core/transport/tcp", "TRANS-1"),
    "heartbeat-first": ("core/lifecycle/complete", "LIFE-1"),
    "second-started": ("replay/seq/all-sequenced", "LIFE-1"),
    "missing-field": ("core/lifecycle/complete", "MSG-4"),
    "wrong-job-id": ("core/lifecycle/complete", "MSG-1"),
    "job-id-changes": ("core/lifecycle/complete", "STREAM-1"),
    "seconds-timestamp": ("core/lifecycle/complete", "MSG-1"),
    "bad-level": ("core/messages/levels", "MSG-6"),
    "result-dropped": ("core/lifecycle/complete", "MSG-7"),
    "empty-error": ("core/lifecycle/fail", "MSG-8"),
    "unknown-type": ("core/lifecycle/complete", "MSG-10"),
    "after-terminal": ("core/lifecycle/complete", "STREAM-3"),
    "bad-escaping": ("core/framing/escaping", "FRAME-2"),
    "raw-surrogate": ("core/framing/lone-surrogate", "FRAME-2"),
    "interleave": ("core/messages/progress-burst", "FRAME-1"),
    "strict-lf": ("auth/framing/crlf", "FRAME-1"),
    "crash-on-garbage": ("control/ignore/garbage", "FRAME-3"),
    "seq-on-some": ("replay/seq/all-sequenced", "STREAM-6"),
    "no-size-check": ("auth/limits/result-too-large", "LIMIT-1"),
    "long-failed": ("auth/limits/failure-too-large", "LIMIT-1"),
    "small-line-buffer": ("auth/limits/large-welcome", "LIMIT-3"),
    "exit-0-after-fail": ("core/lifecycle/fail", "EXIT-2"),
    "stdout-noise": ("core/lifecycle/complete", "FIX-3"),
    "no-default-scenario": ("core/lifecycle/default-scenario", "FIX-1"),
    "crash-wrong-code": ("core/lifecycle/crash", "FIX-2"),
    "fragile-stderr": ("core/streams/broken", "WRAP-5"),
    "no-reconnect": ("core/reconnect/drop", "RECONNECT-1"),
    "hammer": ("auth/reconnect/backoff", "RECONNECT-1"),
    "fixed-2s": ("auth/reconnect/backoff", "RECONNECT-1"),
    "reset-on-connect": ("auth/reconnect/backoff", "RECONNECT-1"),
    "sigpipe": ("core/reconnect/drop", "RECONNECT-2"),
    "window-while-running": ("core/reconnect/outage-past-window", "RECONNECT-3"),
    "never-give-up": ("spool/give-up/result", "RECONNECT-3"),
    "no-started-again": ("core/reconnect/restart", "LIFE-3"),
    "run-without-connection": ("core/reconnect/never-up", "RECONNECT-6"),
    "give-up-at-once": ("core/reconnect/never-up", "RECONNECT-6"),
    "hello-to-v1": ("core/lifecycle/complete", "NEG-3"),
    "echo-features": ("auth/negotiation/unknown-feature", "NEG-2"),
    "spool-without-replay": ("auth/negotiation/spool-without-replay", "NEG-2"),
    "reject-unknown-feature": ("auth/negotiation/unknown-feature", "NEG-1"),
    "no-hello": ("auth/hello/first", "AUTH-2"),
    "wrong-pid": ("auth/hello/first", "AUTH-2"),
    "no-wait-welcome": ("auth/hello/slow-welcome", "AUTH-2"),
    "wait-welcome-forever": ("auth/hello/no-welcome", "AUTH-2"),
    "ignore-auth": ("auth/hello/refused", "AUTH-4"),
    "no-seq": ("replay/seq/all-sequenced", "REPLAY-1"),
    "no-replay": ("replay/restart/unacked", "REPLAY-4"),
    "replay-covered": ("replay/drop/lastseq", "REPLAY-4"),
    "replay-changed": ("replay/restart/unacked", "REPLAY-4"),
    "no-ack-timeout": ("replay/terminal/ack-timeout", "REPLAY-3"),
    "slow-ack-timeout": ("replay/terminal/ack-timeout", "REPLAY-3"),
    "no-ack-wait": ("replay/terminal/slow-ack", "REPLAY-3"),
    "drop-while-connected": ("replay/buffer/back-pressure", "REPLAY-6"),
    "silent-drop": ("replay/buffer/overflow", "REPLAY-6"),
    "ignore-cancel": ("control/cancel/requested", "CANCEL-3"),
    "wrapper-ends-job": ("control/cancel/requested", "CANCEL-3"),
    "stop-reading": ("control/read/flood", "CTRL-6"),
    "crash-on-unknown-type": ("control/ignore/unknown-lines", "CTRL-6"),
    "no-spool": ("spool/give-up/result", "SPOOL-2"),
    "spool-terminal-only": ("spool/give-up/result", "SPOOL-2"),
    "spool-readable": ("spool/give-up/result", "SPOOL-2"),
    "spool-no-token": ("spool/give-up/result", "SPOOL-2"),
    "no-checkpoint": ("checkpoint/save", "CKPT-1"),
    "not-retryable": ("checkpoint/save", "CKPT-4"),
    "lose-checkpoint": ("checkpoint/resume", "CKPT-2"),
    "null-checkpoint-is-one": ("checkpoint/null", "CKPT-2"),
}
#: break → (case, requirement) for a SHOULD broken: reported, not failed.
NOTED_BY = {
    "eager-heartbeat": ("core/heartbeat/busy", "HB-2"),
    "silent-auth": ("auth/hello/refused", "AUTH-4"),
    "small-buffer": ("replay/buffer/back-pressure", "REPLAY-6"),
    "sigterm-dies": ("control/cancel/sigterm", "CANCEL-3"),
    "slow-cancel": ("control/cancel/requested", "CANCEL-2"),
}


@pytest.fixture(scope="module")
def caught(reference_worker: Callable[..., list[str]]) -> dict[str, CaseResult]:
    async def all_of_them() -> dict[str, CaseResult]:
        limit = asyncio.Semaphore(6)

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


def reference_breaks() -> set[str]:
    path = Path(__file__).parent / "workers" / "reference_worker.py"
    spec = importlib.util.spec_from_file_location("reference_worker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.BREAKS)


def test_every_break_of_the_reference_worker_is_tested() -> None:
    assert reference_breaks() == set(CAUGHT_BY | NOTED_BY)


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


def test_every_tested_requirement_has_a_break_caught_by_its_id() -> None:
    """The oracle is mutation-tested: each rule the coverage table claims has a
    broken worker that the suite catches under that rule (or what it shows as)."""
    caught = {requirement for _, requirement in (CAUGHT_BY | NOTED_BY).values()}
    missing = [
        requirement
        for requirement in coverage.tested()
        if not caught & {requirement, *coverage.REPORTED_AS.get(requirement, ())}
    ]
    assert missing == []

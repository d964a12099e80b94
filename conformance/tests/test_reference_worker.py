"""A correct worker passes every level; unclaimed levels are skipped, never failed."""

from __future__ import annotations

from collections.abc import Callable

from extjob.conformance import CASES, PASS, SKIP, CaseResult

Runner = Callable[..., dict[str, CaseResult]]


def _report(results: dict[str, CaseResult]) -> str:
    bad = [r for r in results.values() if r.verdict not in (PASS, SKIP)]
    return "\n\n".join(
        "\n".join([f"{r.verdict} {r.case_id}", r.reason, *map(str, r.findings), *r.transcript])
        for r in bad
    )


def test_the_reference_worker_passes_every_case(
    run_suite: Runner, reference_worker: Callable[..., list[str]]
) -> None:
    results = run_suite(reference_worker())
    assert set(results) == {c.id for c in CASES}
    assert all(r.verdict == PASS for r in results.values()), _report(results)


def test_unclaimed_features_are_skipped_with_a_reason(
    run_suite: Runner, reference_worker: Callable[..., list[str]]
) -> None:
    results = run_suite(
        reference_worker(),
        only=["core/lifecycle/complete", "replay/"],
        features=frozenset({"core", "auth"}),
    )
    assert results["core/lifecycle/complete"].verdict == PASS, _report(results)
    replay = [r for r in results.values() if r.feature == "replay"]
    assert replay and all(r.verdict == SKIP for r in replay)
    assert all("replay" in r.reason for r in replay)


def test_a_v1_worker_passes_core_and_fails_what_it_claims_wrongly(
    run_suite: Runner, reference_worker: Callable[..., list[str]]
) -> None:
    """A worker that ignores the offered features (no hello) fails AUTH-2 if it claims auth."""
    results = run_suite(
        reference_worker("--break", "no-hello"), only=["core/lifecycle/", "auth/hello/first"]
    )
    assert all(results[c].verdict == PASS for c in results if c.startswith("core/")), _report(
        results
    )
    assert "AUTH-2" in {f.requirement for f in results["auth/hello/first"].findings}

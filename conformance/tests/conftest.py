"""Fixtures of the suite's own tests: the reference worker and in-process runs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from extjob.conformance import CaseResult, Timing, run_cases, select

REFERENCE = Path(__file__).parent / "workers" / "reference_worker.py"
ALL_FEATURES = frozenset({"core", "auth", "replay", "control", "spool", "checkpoint"})

Runner = Callable[..., dict[str, CaseResult]]


@pytest.fixture(scope="session")
def reference_worker() -> Callable[..., list[str]]:
    """The command line of the reference worker, with ``--break RULE`` if given."""

    def command(*args: str) -> list[str]:
        return [sys.executable, str(REFERENCE), *args]

    return command


@pytest.fixture(scope="session")
def run_suite() -> Runner:
    """Run the selected cases in-process; results by case id."""

    def run(
        command: Sequence[str],
        only: Sequence[str] = (),
        features: frozenset[str] = ALL_FEATURES,
        jobs: int = 4,
    ) -> dict[str, CaseResult]:
        results = asyncio.run(
            run_cases(select(list(only)), command, features, Timing.from_env(), jobs)
        )
        return {r.case_id: r for r in results}

    return run

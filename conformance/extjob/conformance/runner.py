"""Runs the selected cases, several at a time, and collects their results."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from .cases import Case
from .model import SKIP, CaseResult, Timing
from .run import run_case


def default_jobs() -> int:
    """Two cases per core: most of a case is waiting, but timing needs headroom."""
    return max(2, min(6, 2 * (os.cpu_count() or 1)))


async def run_cases(
    cases: Sequence[Case],
    command: Sequence[str],
    features: frozenset[str],
    timing: Timing,
    jobs: int,
    progress: Callable[[CaseResult], None] = lambda result: None,
) -> list[CaseResult]:
    """Results in catalogue order; unclaimed features are skipped, never run."""
    limit = asyncio.Semaphore(jobs)

    async def one(case: Case) -> CaseResult:
        missing = [f for f in (case.requires or ("core",)) if f not in features]
        if missing:
            result = CaseResult(
                case.id,
                case.title,
                case.feature,
                case.requirements,
                SKIP,
                reason=f"feature not claimed: {', '.join(missing)}",
            )
        else:
            async with limit:
                result = await run_case(case, command, features, timing)
        progress(result)
        return result

    return list(await asyncio.gather(*(one(case) for case in cases)))

"""What a job pays before its code runs: the modules ``import extjob_worker`` loads.

Start-up time itself is measured in ``bench/wrapper_startup.py``; this test keeps
the heavy modules that only some jobs need out of every job's start.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

# asyncio alone was a third of a worker's start-up; the others load on demand
# (async job code, a failure's stack, a reconnect's jitter).
LOADED_ON_DEMAND = ("asyncio", "dataclasses", "traceback", "random", "inspect")


def test_import_loads_no_module_that_only_some_jobs_need() -> None:
    probe = "import sys, extjob_worker; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); {probe}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "extjob_worker" in loaded
    assert [name for name in LOADED_ON_DEMAND if name in loaded] == []

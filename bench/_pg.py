"""A throwaway PostgreSQL server for the cluster benchmarks (the tests' own, reused).

One server per benchmark process, started on first use and stopped at exit;
a fresh database per measurement. ``None`` when PostgreSQL is not installed.
"""

from __future__ import annotations

import atexit
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference_server" / "tests"))

from pgserver import NOT_INSTALLED, PgServer, bindir

_server: PgServer | None = None


def database() -> str | None:
    """The URL of a new, empty database, or None without PostgreSQL."""
    global _server
    if _server is None:
        found = bindir()
        if found is None:
            return None
        _server = PgServer(found).start()
        atexit.register(_server.stop)
    return _server.database()


def skipped(name: str) -> list[str]:
    return [f"{name}: skipped: {NOT_INSTALLED}"]

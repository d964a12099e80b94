"""Benchmark: ingest on PostgreSQL against SQLite, the same load in the same run.

One worker sends 100,000 progress messages as fast as it can (the load of
``server_ingest``); the figure is what the server durably recorded per
second, once with its SQLite file and once with a PostgreSQL database. Group
commits (everything read while the previous commit ran, one transaction,
batches of one attempt merged) keep the database off the hot path. Target
(issue 12): PostgreSQL at least 80% of SQLite.

Run: ``python bench/cluster_ingest.py [--smoke]`` or ``python bench/run.py cluster_ingest``.
"""

from __future__ import annotations

import sys

import _pg
from _cluster_common import verdict
from _server_common import run_async
from server_ingest import server_rate

SIZES = {False: 100_000, True: 5_000}


def run(smoke: bool) -> list[str]:
    async def main() -> list[str]:
        url = _pg.database()
        if url is None:
            return _pg.skipped("cluster_ingest")
        count = SIZES[smoke]
        sqlite = (await server_rate(1, count)).per_second
        postgres = (await server_rate(1, count, database=url)).per_second
        ratio = postgres / sqlite
        return [
            f"cluster_ingest: 1 worker x {count:,} progress messages, recorded per second",
            f"  PostgreSQL {postgres:,.0f} msg/s, SQLite {sqlite:,.0f} msg/s: ratio {ratio:.0%} "
            f"(target >= 80%: {verdict(ratio >= 0.8)})",
        ]

    return run_async(main)


if __name__ == "__main__":
    for line in run("--smoke" in sys.argv):
        print(line)

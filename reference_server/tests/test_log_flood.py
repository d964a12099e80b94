"""SRV-6: every discarded line has a logged reason, but garbage cannot flood the log.

10 s of garbage on a job's socket used to write 39,700 log lines (7.6 MB),
one warning per line. Now the first few of a window are logged in full and
the rest summed up in one line per window, per attempt: a v1 worker that
opens a connection per message (the original shell wrapper) gets no fresh
allowance with each connection.
"""

from __future__ import annotations

import asyncio
import logging
import re

from server_testlib import PYTHON, WORKERS, wait_finished, wait_for

from extjob.server import ratelimit

V1 = [str(WORKERS / "v1_worker.py")]
ONE_CONNECTION = 3000
CONNECTION_PER_LINE = 200


def test_srv_6_discarded_lines_are_summarised_per_attempt(run_servers, caplog):
    async def body(start):
        server = await start()
        server.register_external("v1", command=PYTHON, args=V1)
        job_id = await server.enqueue("v1", {"sleep_ms": 60_000, "heartbeat_ms": 100})

        async def connected() -> bool:
            run = server.runs.get(job_id)
            return run is not None and bool(run.connections)

        await wait_for(connected, what="the worker")
        path = server.runs[job_id].rec.socket_path
        _, writer = await asyncio.open_unix_connection(path)
        writer.write(b"not json\n" * ONE_CONNECTION)
        await writer.drain()
        for _ in range(CONNECTION_PER_LINE):  # the original shell wrapper's habit
            _, each = await asyncio.open_unix_connection(path)
            each.write(b"{tab:\t}\n")
            each.close()
        total = ONE_CONNECTION + CONNECTION_PER_LINE

        async def all_read() -> bool:
            return server.metrics.invalid_lines >= total

        await wait_for(all_read, timeout=30, what="every garbage line to be read")
        writer.close()
        await server.cancel(job_id)  # the attempt ends: what was held back is summed up
        job = await wait_finished(server, job_id)
        return job_id, job.status, total

    with caplog.at_level(logging.WARNING, "extjob.server.run"):
        job_id, status, total = run_servers(body)
    assert status == "cancelled"  # the garbage did not end the job (SRV-6)
    warnings = [r.getMessage() for r in caplog.records if r.name == "extjob.server.run"]
    in_full = [w for w in warnings if "discarded line: invalid_json" in w]
    summaries = [w for w in warnings if "more lines discarded" in w]
    assert len(in_full) == ratelimit.BURST
    assert len(warnings) == len(in_full) + len(summaries) <= ratelimit.BURST + 2
    held_back = 0
    for summary in summaries:
        match = re.fullmatch(
            rf"([\d,]+) more lines discarded from job {job_id} in the last \d+ s: "
            r"invalid_json ([\d,]+)",
            summary,
        )
        assert match, summary
        held_back += int(match[1].replace(",", ""))
    assert held_back == total - ratelimit.BURST

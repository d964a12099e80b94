"""SRV-3: progress messages read together may become one event, the latest;
logs, state changes and terminal events are never coalesced away."""

from __future__ import annotations

from server_testlib import PYTHON, wait_finished

DEADLINE = 15.0  # seconds; each wait ends as soon as the event arrives

# A v1 worker that writes its whole stream in one write, so that the server
# reads runs of progress together: 3 runs of 200 progress between 2 logs.
WORKER = r"""
import json, socket, sys, time
payload = json.loads(sys.stdin.readline())
job = payload["jobId"]
def line(kind, **fields):
    return json.dumps({"type": kind, "jobId": job, "timestamp": int(time.time() * 1000), **fields})
lines = [line("started")]
for run in range(3):
    lines.append(line("progress", percent=run * 30, message=f"phase {run}"))
    lines += [line("progress", percent=run * 30 + i / 10) for i in range(1, 200)]
    if run < 2:
        lines.append(line("log", level="info", message=f"after run {run}"))
lines.append(line("completed", result={"runs": 3}))
sock = socket.socket(socket.AF_UNIX)
sock.connect(payload["socketPath"])
sock.sendall(("\n".join(lines) + "\n").encode())
sock.close()
"""


def test_srv_3_progress_coalesces_per_read_and_logs_and_terminals_never(run_servers):
    async def body(start):
        server = await start()
        server.register_external("burst", command=PYTHON, args=["-c", WORKER])
        with server.events.subscribe() as events:
            job_id = await server.enqueue("burst", {})
            seen = []
            while not {"job.completed", "job.burst.completed"} <= {e.name for e in seen}:
                seen.append(await events.get(timeout=DEADLINE))
        mine = [e for e in seen if e.job_id == job_id]
        names = [e.name for e in mine]
        assert names.count("job.external.spawned") == 1
        assert [e.data["message"] for e in mine if e.name == "job.external.log"] == [
            "after run 0",
            "after run 1",
        ]
        assert names.count("job.completed") == 1 and names.count("job.burst.completed") == 1
        # Each run's latest progress is emitted, before the log that follows it.
        runs: list[list[dict]] = [[]]
        for event in mine:
            if event.name == "job.external.progress":
                runs[-1].append(event.data)
            elif event.name == "job.external.log":
                runs.append([])
        assert len(runs) == 3
        for number, run in enumerate(runs):
            percents = [p["percent"] for p in run]
            assert percents and percents == sorted(percents)
            assert percents[-1] == number * 30 + 19.9  # never lost
            assert len(run) <= 200
            if len(run) == 1:  # coalesced: the run's message carries over (MSG-4)
                assert run[0]["message"] == f"phase {number}"
        job = await wait_finished(server, job_id)
        assert (job.status, job.progress_percent) == ("completed", 79.9)
        # MSG-4: the last run's later progress carry no message; its first one stands
        assert job.progress_message == "phase 2"

    run_servers(body)

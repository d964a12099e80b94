"""What a worker is given: its payload on standard input (PAY-1), and an
environment that holds none of the server's secrets (ENV-3)."""

from __future__ import annotations

from server_testlib import PYTHON, WORKERS, wait_finished, wait_for

V1 = [str(WORKERS / "v1_worker.py")]
# A v1 worker that reads its standard input to end of file and completes with
# what it found there.
STDIN_REPORTER = r"""
import json, os, socket, stat, sys, time
raw = sys.stdin.buffer.read()
payload = json.loads(raw)
found = {
    "regular file": stat.S_ISREG(os.fstat(0).st_mode),
    "newlines": raw.count(b"\n"),
    "last byte": raw[-1:].decode(),
    "object": isinstance(payload, dict),
    "text": payload["data"]["text"],
    "bulk": len(payload["data"]["bulk"]),
}
sock = socket.socket(socket.AF_UNIX)
sock.connect(payload["socketPath"])
for kind, fields in (("started", {}), ("completed", {"result": found})):
    line = {"type": kind, "jobId": payload["jobId"], "timestamp": int(time.time() * 1000)}
    sock.sendall(json.dumps({**line, **fields}).encode() + b"\n")
sock.close()
"""
API_TOKEN = "api-token-0123456789abcdef"
CONFIG_TOKEN = "config-token-0123456789abcdef"


def test_env_3_the_api_token_is_stripped_whatever_its_variable_is_called(run_servers, monkeypatch):
    # token_env names a variable outside EXTJOB_*: it used to reach every worker.
    monkeypatch.setenv("ACME_API_TOKEN", API_TOKEN)
    monkeypatch.setenv("COPY_OF_THE_TOKEN", API_TOKEN)  # the same secret under another name
    monkeypatch.setenv("ALSO_THE_CONFIG_TOKEN", CONFIG_TOKEN)
    monkeypatch.setenv("EXTJOB_TOKEN", "default-home-of-the-token")
    monkeypatch.setenv("DATABASE_PASSWORD", "listed-in-secret-env")
    monkeypatch.setenv("HARMLESS", "visible")
    names = [
        "ACME_API_TOKEN",
        "COPY_OF_THE_TOKEN",
        "ALSO_THE_CONFIG_TOKEN",
        "EXTJOB_TOKEN",
        "DATABASE_PASSWORD",
        "HARMLESS",
        "FROM_DEFINITION",
    ]

    async def body(start):
        server = await start(
            secret_env=("DATABASE_PASSWORD",),
            http={"token_env": "ACME_API_TOKEN", "token": CONFIG_TOKEN},
        )
        server.register_external(
            "v1", command=PYTHON, args=V1, env={"FROM_DEFINITION": "operator's choice"}
        )
        job_id = await server.enqueue("v1", {"env": names})
        await wait_finished(server, job_id)

        async def printed() -> bool:
            return len(await server.logs(job_id)) >= len(names)

        await wait_for(printed, what="the worker's environment lines")
        return {entry.message for entry in await server.logs(job_id) if entry.source == "stdout"}

    lines = run_servers(body)
    assert lines == {
        "ACME_API_TOKEN unset",
        "COPY_OF_THE_TOKEN unset",
        "ALSO_THE_CONFIG_TOKEN unset",
        "EXTJOB_TOKEN unset",
        "DATABASE_PASSWORD unset",
        "HARMLESS=visible",
        "FROM_DEFINITION=operator's choice",
    }


def test_pay_1_the_payload_is_one_line_in_a_file_read_to_its_end(run_servers):
    # 1 MiB of data, more than a pipe holds: only a payload written before the
    # worker starts (a file) is all there for it, and a newline in the data is
    # escaped, so the object is the one line.
    data = {"text": "two\nlines", "bulk": "x" * (1 << 20)}

    async def body(start):
        server = await start()
        server.register_external("stdin", command=PYTHON, args=["-c", STDIN_REPORTER])
        job = await wait_finished(server, await server.enqueue("stdin", data))
        return job.status, job.result

    status, result = run_servers(body)
    assert status == "completed"
    assert result == {
        "regular file": True,
        "newlines": 1,
        "last byte": "\n",
        "object": True,
        "text": "two\nlines",
        "bulk": 1 << 20,
    }

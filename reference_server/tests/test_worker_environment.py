"""ENV-3: nothing the server knows as a secret reaches a worker's environment."""

from __future__ import annotations

from server_testlib import PYTHON, WORKERS, wait_finished, wait_for

V1 = [str(WORKERS / "v1_worker.py")]
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

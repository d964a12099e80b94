"""The client commands (enqueue, status, jobs, cancel, logs) against a real server."""

from __future__ import annotations

import io
import json
import os
import subprocess

from http_helpers import EXTJOB, WAIT, Server, wait_for

from extjob.client.api import Target
from extjob.client.follow import ProgressView


def extjob(
    server: Server, *args: str, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXTJOB_URL": server.url, "EXTJOB_TOKEN": token or server.token}
    return subprocess.run(
        [*EXTJOB, *args], capture_output=True, text=True, timeout=WAIT, env=env, check=False
    )


def test_enqueue_follow_shows_progress_and_logs_and_exits_0_on_completion(server: Server) -> None:
    run = extjob(server, "enqueue", "thumbnails", "--data", '{"steps": 5, "delayMs": 30}', "-f")
    assert run.returncode == 0, run.stderr
    assert "thumbnail 5 of 5" in run.stdout
    assert "[info] 5 thumbnails written" in run.stdout
    assert run.stdout.rstrip().endswith('completed: {"thumbnails": 5}')


def test_enqueue_follow_exits_1_when_the_job_fails(server: Server) -> None:
    run = extjob(server, "enqueue", "crash", "--follow")
    assert run.returncode == 1
    assert "failed: Process exited with code 3" in run.stdout


def test_follow_json_prints_one_event_per_line(server: Server) -> None:
    run = extjob(server, "enqueue", "thumbnails", "--data", '{"steps": 2, "delayMs": 10}',
                 "--follow", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[0]["event"] == "job.state"
    assert "job.completed" in [e["event"] for e in events]


def test_enqueue_prints_the_id_and_status_shows_the_job(server: Server) -> None:
    job_id = extjob(server, "enqueue", "later", "--run-at", "4102444800000").stdout.strip()
    assert job_id.startswith("j_")
    job = json.loads(extjob(server, "status", job_id, "--json").stdout)
    assert job["id"] == job_id and job["status"] == "pending" and job["runAt"] == 4102444800000
    text = extjob(server, "status", job_id).stdout
    assert "status    pending" in text


def test_jobs_lists_with_filters(server: Server) -> None:
    job_id = extjob(server, "enqueue", "later", "--run-at", "2100-01-01T00:00:00+00:00").stdout
    page = json.loads(
        extjob(server, "jobs", "--name", "later", "--status", "pending", "--json").stdout
    )
    assert job_id.strip() in [job["id"] for job in page["jobs"]]
    table = extjob(server, "jobs", "--name", "later").stdout
    assert table.startswith("ID") and job_id.strip() in table


def test_cancel_and_logs_follow_exit_with_status_3_for_a_cancelled_job(server: Server) -> None:
    job_id = extjob(server, "enqueue", "thumbnails", "--data", '{"steps": 1000, "delayMs": 20}')
    job_id_text = job_id.stdout.strip()
    server.wait_for_status(job_id_text, "running")
    follower = subprocess.Popen(
        [*EXTJOB, "logs", job_id_text, "--follow"], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "EXTJOB_URL": server.url, "EXTJOB_TOKEN": server.token},
    )  # fmt: skip
    try:
        cancel = extjob(server, "cancel", job_id_text)
        assert cancel.returncode == 0 and "cancel requested" in cancel.stdout
        assert follower.wait(timeout=WAIT) == 3
    finally:
        follower.kill()
        follower.communicate()
    again = extjob(server, "cancel", job_id_text)
    assert again.returncode == 4 and "already cancelled" in again.stderr


def test_logs_prints_the_stored_log(server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 10, "delayMs": 10})
    server.wait_for_status(job["id"], "completed")
    lines = extjob(server, "logs", job["id"]).stdout.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        'info  5 thumbnails written {"done": 5}',
        'info  10 thumbnails written {"done": 10}',
    ]
    after = extjob(server, "logs", job["id"], "--after", "1", "--json").stdout.splitlines()
    assert [json.loads(line)["index"] for line in after] == [2]


def test_a_wrong_token_exits_4_with_the_reason(server: Server) -> None:
    run = extjob(server, "jobs", token="not-the-token-0123456789")
    assert run.returncode == 4
    assert "wrong bearer token (HTTP 401)" in run.stderr


def test_an_unknown_job_exits_4(server: Server) -> None:
    run = extjob(server, "status", "j_doesnotexist")
    assert run.returncode == 4 and "no job with id" in run.stderr


def test_an_unreachable_server_exits_4(server: Server) -> None:
    run = subprocess.run(
        [*EXTJOB, "jobs", "--url", "http://127.0.0.1:9", "--token", "x" * 16],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert run.returncode == 4 and "cannot reach http://127.0.0.1:9" in run.stderr


def test_data_that_is_not_json_is_a_usage_error(server: Server) -> None:
    run = extjob(server, "enqueue", "thumbnails", "--data", "{nope")
    assert run.returncode == 2 and "--data is not valid JSON" in run.stderr


def test_the_target_comes_from_flags_then_environment_then_config() -> None:
    table = {"host": "0.0.0.0", "port": 9000, "token_env": "MY_TOKEN"}
    environ = {"MY_TOKEN": "from-config-env"}
    assert Target.resolve(None, None, table, environ) == Target(
        "http://127.0.0.1:9000", "from-config-env"
    )
    environ |= {"EXTJOB_URL": "http://h:1/", "EXTJOB_TOKEN": "from-env"}
    assert Target.resolve(None, None, table, environ) == Target("http://h:1", "from-env")
    assert Target.resolve("http://x:2", "flag", table, environ) == Target("http://x:2", "flag")
    assert Target.resolve(None, None, None, {}) == Target("http://127.0.0.1:8765", "")


def test_the_progress_bar_redraws_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    view = ProgressView(out, tty=True)
    view.state({"id": "j_1", "name": "resize", "status": "running", "progress": {}})
    view.progress(50, "half")
    view.progress(75, None)  # MSG-4: the message stands
    view.note("  [info] a log line")
    frames = out.getvalue().split("\r\x1b[2K")
    assert frames[3].startswith("resize j_1 [" + "#" * 22 + "." * 8 + "]  75.0% running   half")
    assert frames[4] == "  [info] a log line\n"
    assert frames[5] == frames[3]  # the bar comes back under the log line


def test_logs_follow_prints_stored_then_live_lines_until_the_end(server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 20, "delayMs": 60})
    wait_for(lambda: server.call("GET", f"/api/jobs/{job['id']}/logs").body["logs"])
    run = extjob(server, "logs", job["id"], "--follow", "--json")
    assert run.returncode == 0, run.stderr
    messages = [json.loads(line)["message"] for line in run.stdout.splitlines()]
    written = [f"{n} thumbnails written" for n in (5, 10, 15, 20)]
    assert list(dict.fromkeys(messages)) == written  # every line, in order

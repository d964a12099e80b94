"""The HTTP API over real HTTP against a real ``extjob serve`` process."""

from __future__ import annotations

import pytest
from http_helpers import TOKEN, Server

QUICK = {"steps": 4, "delayMs": 50}
FINAL = ("job.completed", "job.failed", "job.cancelled")


def test_health_needs_no_token(server: Server) -> None:
    reply = server.call("GET", "/api/health", token=None)
    assert reply.status == 200
    assert reply.body["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/jobs"),
        ("POST", "/api/jobs"),
        ("GET", "/api/jobs/j_0"),
        ("POST", "/api/jobs/j_0/cancel"),
        ("GET", "/api/jobs/j_0/logs"),
        ("GET", "/api/jobs/j_0/events"),
        ("GET", "/api/events"),
        ("GET", "/api/definitions"),
        ("GET", "/metrics"),
    ],
)
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", ""])
def test_everything_but_health_needs_the_token(
    server: Server, method: str, path: str, token: str | None
) -> None:
    body = {"name": "thumbnails"} if method == "POST" else None
    reply = server.call(method, path, body, token=token)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert reply.body["error"]["code"] == "unauthorized"


def test_a_basic_auth_header_is_not_a_bearer_token(server: Server) -> None:
    reply = server.call("GET", "/api/jobs", token=None, headers={"Authorization": f"Basic {TOKEN}"})
    assert reply.status == 401


JSON = "application/json"


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "code", "field"),
    [
        ("{not json", JSON, 400, "invalid_json", None),
        ('{"name": "thumbnails", "data": NaN}', JSON, 400, "invalid_json", None),
        ("[1, 2]", JSON, 400, "invalid_body", None),
        ('{"name": "thumbnails"}', "text/plain", 415, "unsupported_media_type", None),
        ('{"data": {}}', JSON, 400, "invalid_field", "name"),
        ('{"name": ""}', JSON, 400, "invalid_field", "name"),
        ('{"name": "thumbnails", "command": "rm"}', JSON, 400, "unknown_field", "command"),
        ('{"name": "thumbnails", "maxAttempts": 0}', JSON, 400, "invalid_field", "maxAttempts"),
        ('{"name": "thumbnails", "maxAttempts": true}', JSON, 400, "invalid_field", "maxAttempts"),
        ('{"name": "thumbnails", "priority": 1.5}', JSON, 400, "invalid_field", "priority"),
        ('{"name": "thumbnails", "runAt": "tomorrow"}', JSON, 400, "invalid_field", "runAt"),
        (
            '{"name": "thumbnails", "runAt": "2026-01-01T00:00"}',
            JSON,
            400,
            "invalid_field",
            "runAt",
        ),
        ('{"name": "no-such-job"}', JSON, 422, "unknown_job", "name"),
        ('{"name": "../../etc/passwd"}', JSON, 422, "unknown_job", "name"),
    ],
)
def test_enqueue_rejects_bad_bodies_with_a_clear_4xx(
    server: Server, raw: str, content_type: str, status: int, code: str, field: str | None
) -> None:
    reply = server.call("POST", "/api/jobs", raw=raw.encode(), content_type=content_type)
    assert reply.status == status, reply.body
    assert reply.body["error"]["code"] == code
    assert reply.body["error"]["message"]
    assert reply.body["error"].get("field") == field


def test_limit_2_a_body_over_the_payload_limit_is_413(server: Server) -> None:
    # LIMIT-2: 16 MiB of data cannot become a payload.
    raw = b'{"name": "thumbnails", "data": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    reply = server.call("POST", "/api/jobs", raw=raw)
    assert reply.status == 413
    assert reply.body["error"]["code"] == "request_entity_too_large"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/jobs/j_doesnotexist"),
        ("POST", "/api/jobs/j_doesnotexist/cancel"),
        ("GET", "/api/jobs/j_doesnotexist/logs"),
        ("GET", "/api/jobs/j_doesnotexist/events"),
        ("GET", "/api/jobs/" + "x" * 300),
    ],
)
def test_unknown_ids_are_404(server: Server, method: str, path: str) -> None:
    reply = server.call(method, path)
    assert reply.status == 404
    assert reply.body["error"]["code"] == "unknown_job"


@pytest.mark.parametrize(
    ("resource", "query"),
    [
        ("jobs", "status=done"),
        ("jobs", "limit=0"),
        ("jobs", "limit=1001"),
        ("jobs", "limit=x"),
        ("jobs", "cursor=j_doesnotexist"),
        ("logs", "cursor=-1"),
        ("logs", "limit=10001"),
    ],
)
def test_bad_query_parameters_are_400(server: Server, resource: str, query: str) -> None:
    path = "/api/jobs"
    if resource == "logs":
        path = f"/api/jobs/{server.enqueue('later', runAt=4102444800000)['id']}/logs"
    reply = server.call("GET", f"{path}?{query}")
    assert reply.status == 400
    assert reply.body["error"]["field"] == query.split("=")[0]


def test_a_job_runs_to_completion_with_progress_result_and_logs(server: Server) -> None:
    data = {"steps": 5, "delayMs": 50}
    reply = server.call("POST", "/api/jobs", {"name": "thumbnails", "data": data})
    assert reply.status == 201
    job = reply.body
    assert reply.headers["Location"] == f"/api/jobs/{job['id']}"
    assert job["status"] == "pending" and job["data"] == data

    stream = server.events(f"/api/jobs/{job['id']}/events")
    first = stream.next()
    assert first.name == "job.state" and first.json()["id"] == job["id"]
    events = stream.until(lambda e: e.name in FINAL)
    assert events[-1].name == "job.completed"
    percents = [e.json()["percent"] for e in events if e.name == "job.external.progress"]
    assert percents[-1] == 100 and percents == sorted(percents)

    done = server.job(job["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"thumbnails": 5}
    assert done["progress"]["percent"] == 100
    assert done["progress"]["message"] == "thumbnail 5 of 5"
    assert done["attempt"] == 1 and done["pid"] is not None
    assert done["createdAt"] <= done["startedAt"] <= done["finishedAt"]

    logs = server.call("GET", f"/api/jobs/{job['id']}/logs?limit=1").body
    assert [entry["message"] for entry in logs["logs"]] == ["5 thumbnails written"]
    assert logs["logs"][0]["data"] == {"done": 5} and logs["nextCursor"] is None
    rest = server.call("GET", f"/api/jobs/{job['id']}/logs?cursor=1").body
    assert rest == {"logs": [], "nextCursor": None}


def test_exit_1_a_failed_job_reports_its_error_and_srv_7_keeps_its_stderr(server: Server) -> None:
    job = server.enqueue("crash")
    failed = server.wait_for_status(job["id"], "failed")
    assert failed["error"] == "Process exited with code 3"  # EXIT-1
    messages = [
        e["message"] for e in server.call("GET", f"/api/jobs/{job['id']}/logs").body["logs"]
    ]
    assert "boom" in messages  # stderr is kept as the job's log (SRV-7)


def test_cancel_a_running_job_then_cancel_again_is_409(server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 1000, "delayMs": 50})
    stream = server.events(f"/api/jobs/{job['id']}/events")
    stream.until(lambda e: e.name == "job.external.progress")
    reply = server.call("POST", f"/api/jobs/{job['id']}/cancel")
    assert reply.status == 202
    stream.until(lambda e: e.name in FINAL)
    cancelled = server.wait_for_status(job["id"], "cancelled")
    assert cancelled["error"].startswith("cancelled after")  # the job code decided (CANCEL-3)
    again = server.call("POST", f"/api/jobs/{job['id']}/cancel")
    assert again.status == 409
    assert again.body["error"]["code"] == "already_finished"


def test_cancel_a_pending_job(server: Server) -> None:
    job = server.enqueue("later", runAt="2100-01-01T00:00:00Z")
    assert job["runAt"] == 4102444800000
    assert server.call("POST", f"/api/jobs/{job['id']}/cancel").status == 202
    assert server.job(job["id"])["status"] == "cancelled"


def test_list_filters_by_status_and_name_and_pages(server: Server) -> None:
    ids = [server.enqueue("later", runAt=4102444800000, priority=i)["id"] for i in range(3)]
    first = server.call("GET", "/api/jobs?name=later&status=pending&limit=2").body
    assert first["nextCursor"] == first["jobs"][-1]["id"]
    cursor = first["nextCursor"]
    second = server.call("GET", f"/api/jobs?name=later&status=pending&limit=2&cursor={cursor}").body
    listed = [job["id"] for job in first["jobs"] + second["jobs"]]
    assert set(ids) <= set(listed)
    assert len(listed) == len(set(listed))  # no job on two pages
    assert all(job["name"] == "later" and job["status"] == "pending" for job in first["jobs"])
    none = server.call("GET", "/api/jobs?name=thumbnails&status=pending").body
    assert none == {"jobs": [], "nextCursor": None}


def test_definitions_name_jobs_but_never_commands(server: Server) -> None:
    definitions = server.call("GET", "/api/definitions").body["definitions"]
    assert [d["name"] for d in definitions] == [
        "crash",
        "later",
        "resumable",
        "silent",
        "thumbnails",
        "v1",
    ]
    assert all("command" not in d and "env" not in d for d in definitions)


def test_sse_resume_with_last_event_id_has_no_gap(server: Server) -> None:
    witness = server.events("/api/events")  # reads everything, never dropped
    dropped = server.events("/api/events")
    job = server.enqueue("thumbnails", {"steps": 12, "delayMs": 30})
    mine = lambda e: e.json().get("jobId") == job["id"]  # noqa: E731
    progress = lambda e: mine(e) and e.name == "job.external.progress"  # noqa: E731
    before = dropped.until(progress)
    dropped.close()
    seen = witness.until(lambda e: e.id == before[-1].id)
    seen += witness.until(progress) + witness.until(progress)  # the job went on meanwhile
    resumed = server.events("/api/events", last_event_id=before[-1].id)
    after = resumed.until(lambda e: mine(e) and e.name == "job.completed")
    seen += witness.until(lambda e: mine(e) and e.name == "job.completed")
    start = [e.id for e in seen].index(before[0].id)
    assert [(e.id, e.name, e.data) for e in before + after] == [
        (e.id, e.name, e.data) for e in seen[start:]
    ]


def test_sse_resume_from_an_unknown_id_says_so(server: Server) -> None:
    all_jobs = server.events("/api/events", last_event_id="0badb007-5")
    assert all_jobs.next().name == "stream.reset"
    job = server.enqueue("later", runAt=4102444800000)
    one = server.events(f"/api/jobs/{job['id']}/events", last_event_id="0badb007-5")
    state = one.next()
    assert state.name == "job.state" and state.json()["status"] == "pending"


def test_metrics_count_jobs_and_time_requests(server: Server) -> None:
    job = server.enqueue("crash")
    server.wait_for_status(job["id"], "failed")
    assert server.call("GET", "/api/jobs/j_unknown").status == 404
    reply = server.call("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/plain")
    lines = reply.body.splitlines()
    failed = next(line for line in lines if line.startswith('extjob_jobs{state="failed"}'))
    assert int(failed.split()[-1]) >= 1
    assert any(line.startswith("extjob_messages_received_total ") for line in lines)
    for sse in ("extjob_sse_streams ", "extjob_sse_writes_total ", "extjob_sse_write_cpu_seconds"):
        assert any(line.startswith(sse) for line in lines), sse
    assert any(line.startswith('extjob_sse_delay_seconds_bucket{le="0.001"} ') for line in lines)
    timed = [line.split("{", 1)[1] for line in lines if line.startswith("extjob_http_request_dur")]
    assert any(line.startswith('method="POST",route="/api/jobs",status="201"') for line in timed)
    assert any(
        line.startswith('method="GET",route="/api/jobs/{id}",status="404"') for line in timed
    )


@pytest.mark.parametrize(
    "path", ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fsettings.py", "/static/"]
)
def test_static_files_stay_in_their_directory(server: Server, path: str) -> None:
    reply = server.call("GET", path, token=None)
    assert reply.status in (403, 404)
    assert "import" not in str(reply.body)


def test_the_dashboard_page_is_served_without_a_token(server: Server) -> None:
    reply = server.call("GET", "/", token=None)
    assert reply.status == 200
    assert "<title>extjob</title>" in reply.body
    assert server.call("GET", "/static/dashboard.js", token=None).status == 200

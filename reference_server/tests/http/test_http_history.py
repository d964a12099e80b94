"""What the dashboard reads: counts, pages, attempts, the wire view, retry.

Real ``extjob serve``, real workers (the Python wrapper, a v1 worker, bash).
"""

from __future__ import annotations

from typing import Any

from http_helpers import Server, wait_for

FAR = 4102444800000  # 2100: a job that stays pending


def _attempts(server: Server, job_id: str) -> list[dict[str, Any]]:
    reply = server.call("GET", f"/api/jobs/{job_id}/attempts")
    assert reply.status == 200, reply.body
    assert reply.body["nextCursor"] is None
    attempts: list[dict[str, Any]] = reply.body["attempts"]
    return attempts


def _wire(server: Server, job_id: str, attempt: int = 1) -> dict[str, Any]:
    reply = server.call("GET", f"/api/jobs/{job_id}/attempts/{attempt}/wire")
    assert reply.status == 200, reply.body
    view: dict[str, Any] = reply.body
    return view


def test_an_attempt_says_which_server_ran_it_and_how_it_ended(server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 3, "delayMs": 20})
    server.wait_for_status(job["id"], "completed")
    # The exit is recorded once the worker is gone, a moment after the outcome.
    attempt = wait_for(lambda: (a := _attempts(server, job["id"])[0])["exitedAt"] and a)
    assert attempt["attempt"] == 1 and attempt["outcome"] == "completed"
    assert attempt["serverId"]  # config.server_id: host and socket directory
    assert attempt["exitStatus"] == 0 and attempt["pid"] == server.job(job["id"])["pid"]
    assert attempt["startedAt"] <= attempt["endedAt"] <= attempt["exitedAt"]
    # NEG-2: what the Python wrapper's hello negotiated with this server
    assert attempt["features"] == ["auth", "checkpoint", "control", "replay", "spool"]


def test_each_failed_attempt_has_its_own_row(server: Server) -> None:
    job = server.enqueue("crash", maxAttempts=2)
    server.wait_for_status(job["id"], "failed")
    attempts = wait_for(
        lambda: len(a := _attempts(server, job["id"])) == 2 and a[1]["exitedAt"] and a
    )
    assert [a["attempt"] for a in attempts] == [1, 2]
    for attempt in attempts:
        assert attempt["outcome"] == "failed" and attempt["exitStatus"] == 3
        assert attempt["error"] == "Process exited with code 3"
        assert attempt["features"] is None  # it never connected
    page = server.call("GET", f"/api/jobs/{job['id']}/attempts?limit=1").body
    assert [a["attempt"] for a in page["attempts"]] == [1] and page["nextCursor"] == "1"
    rest = server.call("GET", f"/api/jobs/{job['id']}/attempts?cursor=1").body
    assert [a["attempt"] for a in rest["attempts"]] == [2] and rest["nextCursor"] is None


def test_neg_3_a_v1_worker_negotiated_nothing(server: Server) -> None:
    job = server.enqueue("v1", {"steps": 2, "terminal": "completed"})
    server.wait_for_status(job["id"], "completed")
    attempt = wait_for(lambda: (a := _attempts(server, job["id"])[0])["exitedAt"] and a)
    assert attempt["features"] == []
    view = _wire(server, job["id"])
    assert {m["dir"] for m in view["messages"]} == {"in"}  # NEG-3: never written to
    types = [m["message"]["type"] for m in view["messages"]]
    assert types[0] == "started" and types[-1] == "completed"


def test_the_wire_view_shows_both_directions_without_the_token(server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 4, "delayMs": 20})
    server.wait_for_status(job["id"], "completed")
    view = wait_for(lambda: (v := _wire(server, job["id"]))["live"] is False and v)
    assert view["kept"] and view["attempt"] == 1 and view["nextCursor"] is None
    first = [(m["dir"], m["message"]["type"]) for m in view["messages"][:3]]
    assert first == [("in", "hello"), ("out", "welcome"), ("in", "started")]
    assert view["messages"][0]["message"]["token"] == "(hidden)"
    types = [m["message"]["type"] for m in view["messages"] if m["dir"] == "in"]
    assert types.count("progress") == 4 and "completed" in types
    assert any(m["dir"] == "out" and m["message"]["type"] == "ack" for m in view["messages"])
    times = [m["t"] for m in view["messages"]]
    assert times == sorted(times) and times[0] >= 0
    page = server.call("GET", f"/api/jobs/{job['id']}/attempts/1/wire?limit=2").body
    assert [m["index"] for m in page["messages"]] == [1, 2] and page["nextCursor"] == "2"


def test_the_wire_view_of_a_running_job_is_live(server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 1000, "delayMs": 20})
    view = wait_for(
        lambda: (
            sum(m["message"]["type"] == "progress" for m in _wire(server, job["id"])["messages"])
            >= 3
            and _wire(server, job["id"])
        )
    )
    assert view["live"] and view["kept"]
    attempt = _attempts(server, job["id"])[0]
    assert attempt["outcome"] is None and "control" in attempt["features"]
    server.call("POST", f"/api/jobs/{job['id']}/cancel")
    server.wait_for_status(job["id"], "cancelled")
    view = wait_for(lambda: (v := _wire(server, job["id"]))["live"] is False and v)
    assert any(m["dir"] == "out" and m["message"]["type"] == "cancel" for m in view["messages"])
    assert view["omitted"] >= 0


def test_unknown_attempts_are_404(server: Server) -> None:
    job = server.enqueue("later", runAt=FAR)
    for attempt in ("1", "0", "x", "9" * 30):
        reply = server.call("GET", f"/api/jobs/{job['id']}/attempts/{attempt}/wire")
        assert reply.status == 404 and reply.body["error"]["code"] == "unknown_attempt"
    assert _attempts(server, job["id"]) == []


def test_retry_makes_a_new_job_with_the_same_data(server: Server) -> None:
    failed = server.enqueue("crash", {"why": "retry me"}, priority=3)
    server.wait_for_status(failed["id"], "failed")
    reply = server.call("POST", f"/api/jobs/{failed['id']}/retry")
    assert reply.status == 201
    again = reply.body
    assert again["id"] != failed["id"] and reply.headers["Location"] == f"/api/jobs/{again['id']}"
    assert (again["name"], again["data"], again["priority"]) == ("crash", {"why": "retry me"}, 3)
    cancelled = server.enqueue("later", {"n": 1}, runAt=FAR)
    server.call("POST", f"/api/jobs/{cancelled['id']}/cancel")
    assert server.call("POST", f"/api/jobs/{cancelled['id']}/retry").status == 201


def test_retry_of_a_job_that_did_not_fail_is_409(server: Server) -> None:
    pending = server.enqueue("later", runAt=FAR)
    reply = server.call("POST", f"/api/jobs/{pending['id']}/retry")
    assert reply.status == 409 and reply.body["error"]["code"] == "not_retryable"
    assert server.call("POST", "/api/jobs/j_doesnotexist/retry").status == 404


def test_counts_by_state_and_by_name(server: Server) -> None:
    before = server.call("GET", "/api/counts?name=later").body
    server.enqueue("later", runAt=FAR)
    after = server.call("GET", "/api/counts?name=later").body
    assert after["counts"]["pending"] == before["counts"]["pending"] + 1
    assert after["total"] == sum(after["counts"].values())
    everything = server.call("GET", "/api/counts").body
    assert set(everything["counts"]) == {"pending", "running", "completed", "failed", "cancelled"}
    assert everything["total"] >= after["total"]


def test_every_list_pages_with_limit_and_cursor(server: Server) -> None:
    ids = {server.enqueue("later", runAt=FAR, priority=-7)["id"] for _ in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        query = "status=pending&name=later&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = server.call("GET", f"/api/jobs?{query}").body
        assert len(page["jobs"]) <= 3
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert ids <= set(seen) and len(seen) == len(set(seen))
    created = [server.job(i)["createdAt"] for i in seen]
    assert created == sorted(created, reverse=True)  # newest first
    definitions = server.call("GET", "/api/definitions?limit=2").body
    assert len(definitions["definitions"]) == 2 and definitions["nextCursor"] == "later"
    rest = server.call("GET", "/api/definitions?cursor=later").body
    assert [d["name"] for d in rest["definitions"]] == ["resumable", "silent", "thumbnails", "v1"]

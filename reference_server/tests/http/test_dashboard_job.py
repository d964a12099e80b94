"""The job page in a real browser: data, outcome with its stack, checkpoint,
timings, attempts (server, exit, how it ended, features), the wire view and
the live log tail with levels and sources."""

from __future__ import annotations

import re

from browser_helpers import DOCS, SCREENSHOTS, expect, playwright
from http_helpers import Server, wait_for


def _open(page: playwright.Page, job_id: str) -> None:
    page.evaluate("path => { location.hash = path; }", f"#/jobs/{job_id}")
    expect(page.locator("#job-view")).to_be_visible()


def _summary(page: playwright.Page, key: str) -> playwright.Locator:
    return page.locator(f'#job-summary dd[data-key="{key}"]')


def test_a_completed_job_shows_data_result_timings_and_its_attempt(
    page: playwright.Page, server: Server
) -> None:
    job = server.enqueue("thumbnails", {"steps": 5, "delayMs": 20})
    server.wait_for_status(job["id"], "completed")
    _open(page, job["id"])
    expect(page.locator("#job-title")).to_have_text(f"thumbnails {job['id']}")
    expect(page.locator("#job-status")).to_have_text("completed")
    expect(page.locator("#job-data-view")).to_contain_text('"steps": 5')
    expect(page.locator("#job-result-title")).to_have_text("Result")
    expect(page.locator("#job-result")).to_contain_text('"thumbnails": 5')
    expect(_summary(page, "attempt")).to_have_text("1 of 1")
    for key in ("queued", "started", "finished", "waited", "duration", "server", "pid"):
        expect(_summary(page, key)).not_to_have_text("—")
    attempt = page.locator("#attempts tbody tr")
    expect(attempt).to_have_count(1)
    expect(attempt.locator(".exit")).to_have_text("exit 0")
    expect(attempt.locator(".outcome")).to_have_text("completed")
    stored = server.call("GET", f"/api/jobs/{job['id']}/attempts").body["attempts"][0]
    expect(attempt.locator(".server")).to_have_text(stored["serverId"])
    expect(page.locator("#job-features .feature")).to_have_text(
        ["auth", "checkpoint", "control", "replay", "spool"]
    )


def test_a_failed_job_shows_its_error_with_the_stack(page: playwright.Page, server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": "many"})  # int("many") raises in the worker
    server.wait_for_status(job["id"], "failed")
    _open(page, job["id"])
    expect(page.locator("#job-result-title")).to_have_text("Error")
    expect(page.locator("#job-result")).to_contain_text("invalid literal for int()")
    expect(page.locator("#job-result")).to_contain_text("Traceback")  # the worker's stack
    expect(page.locator("#attempts .outcome")).to_contain_text("failed")
    expect(page.locator("#job-retry")).to_be_visible()
    expect(page.locator("#job-cancel")).to_be_hidden()


def test_each_attempt_has_its_row_with_exit_status(page: playwright.Page, server: Server) -> None:
    job = server.enqueue("crash", maxAttempts=2)
    server.wait_for_status(job["id"], "failed")
    wait_for(
        lambda: all(
            a["exitedAt"]
            for a in server.call("GET", f"/api/jobs/{job['id']}/attempts").body["attempts"]
        )
    )
    _open(page, job["id"])
    rows = page.locator("#attempts tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.locator(".exit")).to_have_text(["exit 3", "exit 3"])
    expect(rows.locator(".outcome")).to_have_text(["failed Process exited with code 3"] * 2)
    expect(rows.locator(".features")).to_have_text(["?", "?"])  # never connected


def test_a_resumed_job_shows_its_checkpoint_and_both_attempts(
    page: playwright.Page, server: Server
) -> None:
    job = server.enqueue("resumable")
    server.wait_for_status(job["id"], "completed")
    _open(page, job["id"])
    expect(page.locator("#job-checkpoint")).to_contain_text('"done": 4')
    expect(page.locator("#job-result")).to_contain_text('"resumedFrom": 2')  # CKPT-2
    rows = page.locator("#attempts tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.locator(".outcome")).to_have_text(
        ["failed lost the network at step 2", "completed"]
    )
    expect(_summary(page, "attempt")).to_have_text("2 of 2")


def test_the_log_tail_is_live_with_levels_and_sources(
    page: playwright.Page, server: Server
) -> None:
    crash = server.enqueue("crash")
    server.wait_for_status(crash["id"], "failed")
    _open(page, crash["id"])
    boom = page.locator("#job-logs li", has_text="boom")
    expect(boom.locator(".level")).to_have_text("error")
    expect(boom.locator(".source")).to_have_text("stderr")
    job = server.enqueue("thumbnails", {"steps": 1000, "delayMs": 10})
    _open(page, job["id"])
    lines = page.locator("#job-logs li.log-info")
    expect(lines.nth(2)).to_contain_text("15 thumbnails written")  # arrived while we watched
    expect(lines.first.locator(".source")).to_have_text("worker")
    # Progress and status move on the page without a reload.
    expect(page.locator("#job-status")).to_have_text("running")
    page.wait_for_function(
        "() => Number(document.querySelector('#job-progress [role=progressbar]')"
        ".getAttribute('aria-valuenow')) > 2"
    )
    server.call("POST", f"/api/jobs/{job['id']}/cancel")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#job-retry")).to_be_visible()


def test_the_wire_view_shows_the_workers_messages_with_relative_times(
    page: playwright.Page, server: Server
) -> None:
    job = server.enqueue("thumbnails", {"steps": 3, "delayMs": 20})
    server.wait_for_status(job["id"], "completed")
    _open(page, job["id"])
    rows = page.locator("#wire tbody tr")
    expect(rows.first.locator(".type")).to_have_text("hello")
    expect(rows.nth(1).locator(".type")).to_have_text("welcome")
    expect(rows.nth(1)).to_have_class("dir-out")
    expect(rows.first.locator(".body")).to_contain_text('"token":"(hidden)"')
    expect(rows.first.locator(".t")).to_have_text(re.compile(r"^\+\d+\.\d{3} s$"))
    expect(page.locator("#wire .type", has_text="completed")).to_have_count(1)
    expect(page.locator("#wire-title")).to_have_text("Wire: attempt 1")


def test_the_wire_view_of_a_running_job_moves(page: playwright.Page, server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 1000, "delayMs": 30})
    wait_for(lambda: (server.job(job["id"])["progress"]["percent"] or 0) > 0)
    _open(page, job["id"])
    expect(page.locator("#wire-title")).to_have_text("Wire: attempt 1 (live)")
    newest = page.locator("#wire tbody tr .t").last
    seen = newest.inner_text()
    # Newer messages arrive on the page: the newest time shown moves on.
    expect(newest).not_to_have_text(seen)
    server.call("POST", f"/api/jobs/{job['id']}/cancel")
    expect(page.locator("#wire .type", has_text="cancel")).not_to_have_count(0)


def test_cancel_then_retry_from_the_job_page(page: playwright.Page, server: Server) -> None:
    job = server.enqueue("thumbnails", {"steps": 1000, "delayMs": 50, "tag": "again"})
    wait_for(lambda: (server.job(job["id"])["progress"]["percent"] or 0) > 0)
    _open(page, job["id"])
    page.click("#job-cancel")
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#job-result")).to_contain_text("cancelled after")
    page.click("#job-retry")
    page.wait_for_url(lambda url: job["id"] not in url)
    retried = page.url.rsplit("/", 1)[1]
    expect(page.locator("#job-title")).to_have_text(f"thumbnails {retried}")
    expect(page.locator("#job-data-view")).to_contain_text('"tag": "again"')
    server.call("POST", f"/api/jobs/{retried}/cancel")


def test_screenshot_of_a_job_page(page: playwright.Page, server: Server) -> None:
    """docs/job.png, for the README: only with EXTJOB_SCREENSHOTS=1."""
    job = server.enqueue("thumbnails", {"steps": 10, "delayMs": 40})
    server.wait_for_status(job["id"], "completed")
    wait_for(
        lambda: server.call("GET", f"/api/jobs/{job['id']}/attempts").body["attempts"][0][
            "exitedAt"
        ]
    )
    _open(page, job["id"])
    expect(page.locator("#attempts .exit")).to_have_text("exit 0")
    expect(page.locator("#job-logs li")).to_have_count(2)
    completed = server.call("GET", "/api/counts").body["counts"]["completed"]
    expect(page.locator('#counts button[data-state="completed"] .count')).to_have_text(
        str(completed)
    )
    if SCREENSHOTS:
        page.screenshot(path=DOCS / "job.png", full_page=True)

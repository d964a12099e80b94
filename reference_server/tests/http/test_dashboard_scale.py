"""The dashboard with 1,000 running jobs: counts, paging through all of them
without loading them all, and live progress that updates rows in place,
batched per animation frame, never rebuilding the table.

1,000 real processes on a small shared machine: 900 of them are quiet
(``sleep``, which never connects: the server still spawns, watches and
counts each), 100 are Python workers that send progress ten times a second,
so the page takes about a thousand events a second.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
from collections.abc import Iterator

import pytest
from browser_helpers import expect, open_dashboard, playwright
from http_helpers import Server, all_jobs, start_server, stop_server, wait_for

QUIET = 900
BUSY = 100
PAGE_SIZE = 50  # dashboard.js

SETTINGS = "concurrency = 1100\n"
JOBS = """
[jobs.quiet]
command = "bash"
args = ["-c", "exec sleep 600"]
heartbeat_timeout_ms = 600000
kill_grace_ms = 500
"""


@pytest.fixture(scope="module")
def crowd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("crowd"), settings=SETTINGS, jobs=JOBS)
    yield server
    # Quicker than a thousand cancels: stop the server (its workers keep
    # running, by design), then end their process groups (SRV-8) here.
    groups = [job["pid"] for job in all_jobs(server, "running") if job["pid"]]
    server.process.terminate()
    server.process.wait(timeout=60)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    stop_server(server)


def _running(server: Server) -> int:
    count: int = server.call("GET", "/api/counts").body["counts"]["running"]
    return count


def _ids_on_page(page: playwright.Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "#jobs tbody tr", "rows => rows.map(r => r.id.slice(4))"
    )
    return ids


@pytest.mark.slow
def test_the_dashboard_at_1000_running_jobs(browser: playwright.Browser, crowd: Server) -> None:
    page = open_dashboard(browser, crowd)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: crowd.enqueue("quiet"), range(QUIET)))
    busy = [crowd.enqueue("thumbnails", {"steps": 6000, "delayMs": 100}) for _ in range(BUSY)]
    wait_for(lambda: _running(crowd) == QUIET + BUSY, timeout=180)
    running = page.locator('#counts button[data-state="running"] .count')
    expect(running).to_have_text(str(QUIET + BUSY), timeout=30_000)
    # Never more rows than a page, and the newest page is the busy jobs.
    expect(page.locator("#jobs tbody tr")).to_have_count(PAGE_SIZE)
    newest = [job["id"] for job in reversed(busy)][:PAGE_SIZE]
    wait_for(lambda: _ids_on_page(page) == newest)  # the page is re-read at most once a second

    # Progress floods in: rows change in place, at most once per frame.
    wait_for(lambda: all((crowd.job(j["id"])["progress"]["percent"] or 0) > 0 for j in busy[-5:]))
    page.evaluate("document.querySelectorAll('#jobs tbody tr').forEach(r => { r.__kept = true; })")
    before = page.evaluate("({...window.extjobStats})")
    page.wait_for_function(
        "n => window.extjobStats.events > n + 2000", arg=before["events"], timeout=60_000
    )
    after = page.evaluate("({...window.extjobStats})")
    kept = page.evaluate("[...document.querySelectorAll('#jobs tbody tr')].every(r => r.__kept)")
    assert kept, "a row was rebuilt"
    assert after["rowsCreated"] == before["rowsCreated"]
    frames = after["frames"] - before["frames"]
    events = after["events"] - before["events"]
    assert frames > 0 and frames * 2 < events, (frames, events)  # batched, not per event
    moving = page.eval_on_selector_all(
        "#jobs tbody [role=progressbar]",
        "bars => bars.map(b => Number(b.getAttribute('aria-valuenow')))",
    )
    assert sum(v > 0 for v in moving) >= PAGE_SIZE // 2

    # Page through all of them, one page in the DOM at a time.
    seen = _ids_on_page(page)
    for number in range(2, (QUIET + BUSY) // PAGE_SIZE + 1):
        page.click("#page-next")
        expect(page.locator("#page-number")).to_have_text(f"page {number}")
        ids = _ids_on_page(page)
        assert len(ids) == PAGE_SIZE
        seen += ids
    expect(page.locator("#page-next")).to_be_disabled()
    assert len(set(seen)) == QUIET + BUSY
    page.click("#page-first")
    expect(page.locator("#page-number")).to_have_text("page 1")

    # Filtered by state, still paged: everything here is running.
    page.locator('#counts button[data-state="running"]').click()
    expect(page.locator("#jobs tbody tr")).to_have_count(PAGE_SIZE)
    expect(page.locator("#jobs tbody tr:not([data-status=running])")).to_have_count(0)
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()

"""The dashboard in a real headless browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_helpers import WAIT, Server

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = WAIT * 1000

if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (.ci/run installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright.Browser]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: playwright.Browser, server: Server) -> Iterator[playwright.Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 700})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/#token={server.token}")
    playwright.expect(page.locator("#connection")).to_have_text("live")
    playwright.expect(page.locator("#login")).to_be_hidden()
    yield page
    context.close()


def test_enqueue_and_watch_the_bar_move_to_completion(
    page: playwright.Page, server: Server, tmp_path: Path
) -> None:
    assert "token" not in page.url  # the token is taken out of the address bar
    page.select_option("#job-name", "thumbnails")
    page.fill("#job-data", '{"steps": 8, "delayMs": 150}')
    page.click("#enqueue button")
    row = page.locator("#jobs tbody tr").first
    bar = row.locator("[role=progressbar]")
    # The bar is seen part-way, then full: it moved with the job.
    page.wait_for_function(
        "bar => { const v = Number(bar.getAttribute('aria-valuenow')); return v > 0 && v < 100; }",
        arg=bar.element_handle(),
    )
    playwright.expect(row.locator(".state")).to_have_text("completed")
    playwright.expect(bar).to_have_attribute("aria-valuenow", "100")
    row.click()
    playwright.expect(page.locator("#detail-outcome")).to_contain_text('"thumbnails": 8')
    playwright.expect(page.locator("#detail-logs li")).to_have_count(1)
    page.screenshot(path=tmp_path / "dashboard-completed.png", full_page=True)


def test_cancel_a_running_job_from_the_page(
    page: playwright.Page, server: Server, tmp_path: Path
) -> None:
    job = server.enqueue("thumbnails", {"steps": 1000, "delayMs": 50})
    row = page.locator(f"#job-{job['id']}")
    playwright.expect(row.locator(".state")).to_have_text("running")
    # Running from the claim on; the cancel is graceful once the worker is connected.
    playwright.expect(row.locator(".message")).not_to_be_empty()
    row.locator("button.cancel").click()
    playwright.expect(row.locator(".state")).to_have_text("cancelled")
    playwright.expect(row.locator("button.cancel")).to_be_hidden()
    assert server.job(job["id"])["status"] == "cancelled"
    row.click()
    playwright.expect(page.locator("#detail-outcome")).to_contain_text("cancelled after")
    page.screenshot(path=tmp_path / "dashboard-cancelled.png", full_page=True)


def test_a_wrong_token_asks_for_the_right_one(browser: playwright.Browser, server: Server) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{server.url}/#token=wrong-token-0123456789")
    playwright.expect(page.locator("#login")).to_be_visible()
    page.fill("#token", server.token)
    page.click("#login button")
    playwright.expect(page.locator("#connection")).to_have_text("live")
    playwright.expect(page.locator("#login")).to_be_hidden()
    context.close()

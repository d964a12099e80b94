"""Debian's chromium driven by Playwright, for the dashboard's tests.

The ``browser`` and ``page`` fixtures are in ``conftest.py``; a test that
uses them is skipped where chromium is missing (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil

import playwright.sync_api as playwright
from http_helpers import REPO, WAIT, Server

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
VIEWPORT = {"width": 1280, "height": 800}
# The README's pictures are made by the tests, but only when asked:
# EXTJOB_SCREENSHOTS=1 pytest reference_server/tests/http -k screenshot
SCREENSHOTS = os.environ.get("EXTJOB_SCREENSHOTS") == "1"
DOCS = REPO / "docs"

expect = playwright.expect


def open_dashboard(
    browser: playwright.Browser, server: Server, path: str = "", scheme: str = "light"
) -> playwright.Page:
    """A new page with the token (taken out of the address bar at once), live."""
    context = browser.new_context(viewport=VIEWPORT, color_scheme=scheme)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors  # type: ignore[attr-defined]
    page.goto(f"{server.url}/#token={server.token}")
    expect(page.locator("#connection")).to_have_text("live")
    if path:
        page.evaluate("path => { location.hash = path; }", path)
    return page


def row(page: playwright.Page, job_id: str) -> playwright.Locator:
    return page.locator(f"#job-{job_id}")

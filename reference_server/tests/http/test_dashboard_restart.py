"""The dashboard across a server restart: it reconnects by itself, learns
from ``stream.reset`` that it missed events, re-reads what it shows, and goes
on live, with no reload of the page."""

from __future__ import annotations

import socket
from pathlib import Path

from browser_helpers import expect, open_dashboard, playwright
from http_helpers import start_server, stop_server, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_live_again_after_a_server_restart_without_a_reload(
    browser: playwright.Browser, tmp_path: Path
) -> None:
    port = ("--port", str(_free_port()))  # the page's origin stays the same
    server = start_server(tmp_path, port)
    page = open_dashboard(browser, server)
    page.evaluate("window.__samePage = true")
    job = server.enqueue("thumbnails", {"steps": 2000, "delayMs": 50})
    line = page.locator(f"#job-{job['id']}")
    expect(line).to_have_attribute("data-status", "running")
    # Stopped: the worker keeps running (and reconnects to the next server).
    server.process.terminate()
    server.process.wait()
    expect(page.locator("#connection")).to_have_text("reconnecting")
    loads = page.evaluate("window.extjobStats.pageLoads")
    server = start_server(tmp_path, port)
    try:
        expect(page.locator("#connection")).to_have_text("live")
        page.wait_for_function("n => window.extjobStats.pageLoads > n", arg=loads)  # stream.reset
        # Live again: a job enqueued now appears, the old one's bar moves on.
        later = server.enqueue("crash")
        expect(page.locator(f"#job-{later['id']}")).to_have_attribute("data-status", "failed")
        bar = line.locator("[role=progressbar]")
        seen = bar.get_attribute("aria-valuenow")
        wait_for(lambda: bar.get_attribute("aria-valuenow") != seen)
        assert page.evaluate("window.__samePage") is True  # never reloaded
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        page.context.close()
        stop_server(server)

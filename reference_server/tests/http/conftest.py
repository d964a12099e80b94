"""The ``server`` fixture: a real ``extjob serve`` process per test module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# --import-mode=importlib keeps test directories off sys.path; the helpers
# module has a name of its own so that it cannot shadow another conftest.
sys.path.insert(0, str(Path(__file__).parent))

from browser_helpers import ARGS, CHROMIUM, open_dashboard, playwright
from http_helpers import Server, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def browser() -> Iterator[playwright.Browser]:
    """Debian's chromium, headless (``.ci/run`` installs it)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (.ci/run installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: playwright.Browser, server: Server) -> Iterator[playwright.Page]:
    """The dashboard, live, in a fresh browser context."""
    page = open_dashboard(browser, server)
    yield page
    assert page.errors == []  # type: ignore[attr-defined]  # no uncaught script error
    page.context.close()

"""The ``server`` fixture: a real ``extjob serve`` process per test module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# --import-mode=importlib keeps test directories off sys.path; the helpers
# module has a name of its own so that it cannot shadow another conftest.
sys.path.insert(0, str(Path(__file__).parent))

from http_helpers import Server, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("server"))
    yield running
    stop_server(running)

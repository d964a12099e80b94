"""Fixtures for the reference server's tests: real servers, real workers, short paths."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgserver import NOT_INSTALLED, PgServer, bindir
from server_testlib import PYTHON, REPO, kill_groups, make_config

from extjob.server import JobServer

ServerFactory = Callable[..., Awaitable[JobServer]]
T = TypeVar("T")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory short enough for Unix socket paths (pytest's tmp_path may not be)."""
    path = Path(tempfile.mkdtemp(prefix="xj", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_servers(short_tmp: Path) -> Callable[[Callable[[ServerFactory], Awaitable[T]]], T]:
    """Run ``body(start)`` in a fresh event loop; ``start(**config)`` starts a server.

    Every server started is stopped at the end and its workers' process
    groups killed, whatever the test did.
    """

    def runner(body: Callable[[ServerFactory], Awaitable[T]], timeout: float = 90) -> T:
        async def main() -> T:
            servers: list[JobServer] = []

            async def start(**options: Any) -> JobServer:
                server = JobServer(make_config(short_tmp, **options))
                await server.start()
                servers.append(server)
                return server

            try:
                return await asyncio.wait_for(body(start), timeout)
            finally:
                for server in servers:
                    pids = [run.rec.pid for run in server.runs.values() if run.rec.pid]
                    await server.stop()
                    kill_groups(pids)

        return asyncio.run(main())

    return runner


@pytest.fixture(scope="session")
def go_fixture(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The Go fixture worker, built once per session."""
    if shutil.which("go") is None:
        pytest.skip("go is not installed")
    out = tmp_path_factory.mktemp("go") / "extjob-fixture"
    subprocess.run(
        ["go", "build", "-o", str(out), "./cmd/extjob-fixture"],
        cwd=REPO / "wrappers" / "go",
        check=True,
    )
    return [str(out)]


@pytest.fixture(scope="session")
def rust_fixture() -> list[str]:
    """The Rust fixture worker, built once per session (into CARGO_TARGET_DIR if set)."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    crate = REPO / "wrappers" / "rust"
    subprocess.run(
        ["cargo", "build", "--quiet", "--locked", "--bin", "extjob-fixture"], cwd=crate, check=True
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR") or crate / "target")
    return [str(target / "debug" / "extjob-fixture")]


@pytest.fixture(scope="session")
def typescript_fixture(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The TypeScript fixture worker on Node.js, compiled once per session (after `npm ci`)."""
    package = REPO / "wrappers" / "typescript"
    tsc = package / "node_modules" / ".bin" / "tsc"
    if shutil.which("node") is None or not tsc.exists():
        pytest.skip("node, or `npm ci` in wrappers/typescript, is missing")
    out = tmp_path_factory.mktemp("typescript")
    subprocess.run([str(tsc), "-p", "tsconfig.json", "--outDir", str(out)], cwd=package, check=True)
    return [str(shutil.which("node")), str(out / "fixture.js")]


@pytest.fixture(scope="session")
def bun_fixture(typescript_fixture: list[str]) -> list[str]:
    """The same TypeScript fixture on Bun (which `npm ci` in wrappers/typescript installs)."""
    bun = REPO / "wrappers" / "typescript" / "node_modules" / ".bin" / "bun"
    if not bun.exists():
        pytest.skip("bun is missing: `npm ci` in wrappers/typescript")
    return [str(bun), typescript_fixture[1]]


@pytest.fixture(params=["python", "shell", "go", "rust", "typescript", "bun"])
def fixture_worker(request: pytest.FixtureRequest) -> tuple[str, list[str]]:
    """(command, args) of each language's fixture worker (SPEC section 11)."""
    if request.param == "python":
        return PYTHON, [str(REPO / "wrappers" / "python" / "fixture_worker.py")]
    if request.param == "shell":
        return "bash", [str(REPO / "wrappers" / "shell" / "fixture_worker.sh")]
    argv = request.getfixturevalue(f"{request.param}_fixture")
    return argv[0], argv[1:]


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole session (initdb in a temporary directory)."""
    found = bindir()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(NOT_INSTALLED + ": CI must run the PostgreSQL tests")
        pytest.skip(NOT_INSTALLED)
    server = PgServer(found).start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg: PgServer) -> str:
    """A fresh, empty database of the session's PostgreSQL server."""
    return pg.database()


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, short_tmp: Path) -> str:
    """Each store in turn: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(short_tmp / "jobs.db")
    url: str = request.getfixturevalue("pg_url")
    return url

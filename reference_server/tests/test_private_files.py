"""What the server stores is for its own user only (ENV-3, AUTH-1, TRANS-2, SPOOL-1).

The database holds every running attempt's token, the output files what the
jobs print: under the usual umask 022 they used to be created 0644. These
tests run real servers and workers under umask 022 and look at the modes of
everything the server made, and at what it does with paths another user
could have prepared.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_testlib import PYTHON, WORKERS, wait_finished, wait_for

from extjob.server.private import UnsafePath, private_socket

V1 = [str(WORKERS / "v1_worker.py")]


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_env_3_database_output_and_sockets_are_private_under_umask_022(run_servers, short_tmp):
    state = short_tmp / "state"  # none of it exists yet: the server creates it all

    async def body(start):
        server = await start(
            database=str(state / "db" / "jobs.db"),
            socket_dir=str(state / "s"),
            spool_dir=str(state / "spool"),
        )
        server.register_external("v1", command=PYTHON, args=V1)
        job_id = await server.enqueue(
            "v1", {"steps": 3, "stdout": "out", "stderr": "err", "sleep_ms": 60_000}
        )

        async def output_taken() -> bool:
            return len(await server.logs(job_id)) >= 5  # 3 logs, stdout, stderr

        await wait_for(output_taken, what="the worker's messages and output")
        run = server.runs[job_id]
        seen = modes(state)
        await server.cancel(job_id)
        await wait_finished(server, job_id)
        return run, seen

    with umask(0o022):
        run, seen = run_servers(body)
    files = {"db/jobs.db", "db/jobs.db-wal", "db/jobs.db-shm"}
    files |= {os.path.relpath(p, state) for p in (run.rec.out_path, run.rec.err_path)}
    assert files <= set(seen)
    assert {name: seen[name] for name in files} == dict.fromkeys(files, 0o600)
    assert {seen["db"], seen["s"], seen["spool"]} == {0o700}
    assert seen[os.path.relpath(run.rec.socket_path, state)] == 0o600
    assert {name: mode for name, mode in seen.items() if mode & 0o077} == {}


def test_trans_2_a_job_socket_is_never_open_to_others(short_tmp, monkeypatch):
    # The socket file must carry 0600 from the moment bind makes it: the loop
    # yields between binding and serving, and a chmod after that left a window
    # in which the socket had the umask's mode (a clean-clone CI caught 0755).
    # With the chmod taken away, only a mode set before bind can pass.
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)
    path = str(short_tmp / "job.sock")
    with umask(0o022), contextlib.closing(private_socket(path)):
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_env_3_a_database_left_readable_by_an_older_server_is_made_private(
    run_servers, short_tmp, caplog
):
    database = short_tmp / "old.db"
    with umask(0o022):
        sqlite3.connect(database).execute("PRAGMA journal_mode = WAL").close()
        database.with_name("old.db-wal").touch()
    assert stat.S_IMODE(database.stat().st_mode) == 0o644

    async def body(start):
        await start(database=str(database))
        return modes(short_tmp)  # while it runs: SQLite removes the -wal on close

    with caplog.at_level(logging.WARNING, "extjob.server.private"):
        seen = run_servers(body)
    assert {seen[name] for name in ("old.db", "old.db-wal", "old.db-shm")} == {0o600}
    assert "old.db-wal was mode 644: now 0600" in caplog.text


def test_env_3_a_database_directory_writable_by_others_is_refused(run_servers, short_tmp):
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)

    async def body(start):
        await start(database=str(shared / "jobs.db"))

    with pytest.raises(UnsafePath, match=r"writable by other users \(mode 777\).*chmod go-w"):
        run_servers(body)
    assert list(shared.iterdir()) == []  # refused before SQLite made anything


def test_trans_2_a_socket_dir_that_is_a_symlink_is_refused(run_servers, short_tmp):
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir()
    (short_tmp / "s").symlink_to(elsewhere)

    async def body(start):
        await start(socket_dir=str(short_tmp / "s"))

    with pytest.raises(UnsafePath, match=r"socket_dir .* symbolic link"):
        run_servers(body)


@pytest.mark.skipif(os.geteuid() != 0, reason="making a directory of another user needs root")
def test_trans_2_a_socket_dir_made_by_another_user_is_refused(run_servers, short_tmp):
    # Another user got to the shared /tmp first, hoping to reach the sockets.
    planted = short_tmp / "s"
    planted.mkdir()
    planted.chmod(0o777)
    os.chown(planted, 65534, 65534)

    async def body(start):
        await start(socket_dir=str(planted))

    with pytest.raises(UnsafePath, match="belongs to uid 65534, not to this server's user"):
        run_servers(body)
    assert stat.S_IMODE(planted.stat().st_mode) == 0o777  # and nothing was changed in it


def test_spool_1_an_existing_spool_dir_open_to_others_is_closed(run_servers, short_tmp, caplog):
    spool = short_tmp / "spool"
    spool.mkdir()
    spool.chmod(0o755)

    async def body(start):
        await start(spool_dir=str(spool))

    with caplog.at_level(logging.WARNING, "extjob.server.private"):
        run_servers(body)
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    assert "spool_dir" in caplog.text and "was mode 755: now 0700" in caplog.text

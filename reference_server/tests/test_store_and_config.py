"""The store's atomic claim across processes, and the TOML config loader."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

import pytest
from server_testlib import PYTHON, WORKERS, make_config, wait_finished

from extjob.server import Job, load_config, open_store
from extjob.server.store import AttemptRecord, is_url


def _prepare(job: Job) -> AttemptRecord:
    return AttemptRecord(job.id, job.name, job.attempt, 0, 0, "t" * 16, "s", "sp", "o", "e")


async def _claim_all(database: str, owner: str) -> list[str]:
    store = await open_store(database)
    claimed = []
    while (got := await store.claim(owner, 2**62, {"x": 0}, _prepare)) is not None:
        claimed.append(got[0].id)
    await store.close()
    return claimed


def _claimer(database: str, owner: str, queue: multiprocessing.Queue) -> None:
    queue.put(asyncio.run(_claim_all(database, owner)))


def test_claims_are_atomic_across_processes(database: str):
    async def fill() -> None:
        store = await open_store(database)
        for job_id in ids:
            job = Job.pending(job_id, "x", {}, max_attempts=1, priority=0, run_at=0, created_at=0)
            await store.create(job)
        await store.close()

    async def count() -> int:
        store = await open_store(database)
        try:
            return (await store.counts())["running"]
        finally:
            await store.close()

    ids = [f"j_{i:04d}" for i in range(400)]
    asyncio.run(fill())
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=_claimer, args=(database, f"p{i}", queue)) for i in range(3)
    ]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == ids  # every job once, none twice
    assert asyncio.run(count()) == 400


def test_two_servers_on_one_database_run_each_job_once(run_servers, short_tmp: Path, database):
    async def body(start):
        servers = [
            await start(socket_dir=str(short_tmp / f"s{i}"), database=database) for i in range(2)
        ]
        for server in servers:
            server.register_external("v1", command=PYTHON, args=[str(WORKERS / "v1_worker.py")])
        ids = [await servers[0].enqueue("v1", {"steps": 1}) for _ in range(12)]
        for job_id in ids:
            job = await wait_finished(servers[1], job_id, timeout=30)
            assert (job.status, job.attempt) == ("completed", 1)
        assert sum(server.metrics.spawned for server in servers) == 12

    run_servers(body)


def test_load_config_resolves_paths_and_reads_jobs(tmp_path: Path):
    path = tmp_path / "extjob.toml"
    path.write_text(
        'database = "db/jobs.db"\nspool_dir = "spool"\nconcurrency = 4\n'
        "[http]\nport = 9000\n"
        '[jobs.resize]\ncommand = "python3"\nargs = ["resize.py"]\ncwd = "work"\n'
        'env = { QUALITY = "90" }\nheartbeat_timeout_ms = 6000\nmax_attempts = 3\n'
    )
    config = load_config(path)
    assert config.database == str(tmp_path / "db" / "jobs.db")
    assert config.spool_dir == str(tmp_path / "spool")
    assert (config.concurrency, config.http) == (4, {"port": 9000})
    job = config.jobs["resize"]
    assert (job.command, job.args, job.cwd) == ("python3", ("resize.py",), str(tmp_path / "work"))
    assert (job.env, job.heartbeat_timeout_ms, job.max_attempts) == ({"QUALITY": "90"}, 6000, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("databse = 'x'", "unknown config keys: databse"),
        ("[jobs.a]\nargs = []", r"\[jobs.a\]: command is required"),
        ("[jobs.a]\ncommand = 'x'\ntimeout = 5", r"\[jobs.a\]: unknown keys: timeout"),
        ("[jobs.a]\ncommand = 'x'\nheartbeat_timeout_ms = 10", "heartbeat_timeout_ms must be"),
        ("[jobs.a]\ncommand = 'x'\nmax_attempts = 0", "max_attempts must be an integer >= 1"),
        ("concurrency = 'many'", "concurrency must be an integer"),
        ("socket_dir = '/tmp/" + "d" * 120 + "'", "too long for Unix socket paths"),
        ("= broken", "invalid TOML"),
    ],
)
def test_load_config_names_what_is_wrong(tmp_path: Path, text: str, message: str):
    path = tmp_path / "extjob.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_config(path)
    with pytest.raises(ValueError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")


def test_database_urls_are_kept_and_overridden(tmp_path: Path):
    path = tmp_path / "extjob.toml"
    url = "postgresql://extjob:secret@db.example:5432/jobs"
    path.write_text(f'database = "{url}"\n')
    assert load_config(path, environ={}).database == url
    assert load_config(path, environ={"EXTJOB_DATABASE": "x.db"}).database == str(
        Path("x.db").resolve()
    )
    other = "postgres://h/db"
    assert load_config(path, database=other, environ={"EXTJOB_DATABASE": "x.db"}).database == other
    assert is_url(url) and not is_url("postgresql.db")


def test_server_ids_keep_servers_apart(short_tmp: Path):
    a = make_config(short_tmp, socket_dir=str(short_tmp / "a"))
    b = make_config(short_tmp, socket_dir=str(short_tmp / "b"))
    assert a.server_id != b.server_id

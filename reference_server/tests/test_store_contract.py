"""The store contract, run against both stores (SQLite and a real PostgreSQL).

What the server relies on: claims in priority/runAt order, each job claimed
once by any number of concurrent claimers, per-name limits across claimers,
group commits fenced on the current attempt, leases whose expiry declares
their attempts lost (CKPT-4: retried with their checkpoint), and migrations
applied once however many servers start at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from extjob.server.models import Job
from extjob.server.store import (
    AttemptRecord,
    Batch,
    EndAttempt,
    Finish,
    NewLog,
    Record,
    SetPid,
    Store,
    is_url,
    open_store,
)


def _prepare(job: Job) -> AttemptRecord:
    stem = f"{job.id}.{job.attempt}"
    return AttemptRecord(
        job.id,
        job.name,
        job.attempt,
        0,
        0,
        f"token-{stem}",
        f"{stem}.sock",
        "sp",
        "o",
        "e",
        max_attempts=job.max_attempts,
    )


def _job(job_id: str, name: str = "x", **options: Any) -> Job:
    options.setdefault("max_attempts", 1)
    options.setdefault("priority", 0)
    options.setdefault("run_at", 0)
    return Job.pending(job_id, name, {"b": 1, "a": [1.5, "é"]}, created_at=0, **options)


def run(database: str, body: Callable[[Store], Awaitable[None]]) -> None:
    async def main() -> None:
        store = await open_store(database)
        try:
            await asyncio.wait_for(body(store), 60)
        finally:
            await store.close()

    asyncio.run(main())


def test_jobs_round_trip_exactly(database: str):
    async def body(store: Store) -> None:
        await store.create(_job("j_1"))
        await store.create(_job("j_2", name="y"))
        job = await store.get("j_1")
        assert job is not None and job.data == {"b": 1, "a": [1.5, "é"]}
        assert list(job.data) == ["b", "a"]  # key order kept (no jsonb)
        assert await store.get("j_nope") is None
        await store.create(_job("j_3"))
        assert [j.id for j in await store.list(None, None, 10)] == ["j_3", "j_2", "j_1"]
        assert [j.id for j in await store.list("pending", "y", 10)] == ["j_2"]
        assert [j.id for j in await store.list(None, None, 1, "j_3")] == ["j_2"]  # keyset paging
        assert [j.id for j in await store.list(None, "x", 5, "j_3")] == ["j_1"]
        assert (await store.counts())["pending"] == 3
        assert (await store.counts("y"))["pending"] == 1

    run(database, body)


def test_claims_follow_priority_then_run_at_then_order(database: str):
    async def body(store: Store) -> None:
        await store.create(_job("j_late", run_at=10_000))
        await store.create(_job("j_low", run_at=5))
        await store.create(_job("j_high", priority=5, run_at=9))
        await store.create(_job("j_low2", run_at=5))
        order = []
        while (got := await store.claim("me", 9_999, {"x": 0}, _prepare)) is not None:
            job, rec = got
            assert (job.status, job.attempt, rec.token) == ("running", 1, f"token-{job.id}.1")
            order.append(job.id)
        assert order == ["j_high", "j_low", "j_low2"]  # j_late is not due
        assert await store.next_run_at(["x"]) == 10_000
        assert await store.claim("me", 10_000, {"y": 0}, _prepare) is None  # not our names
        assert (await store.running_by_owner()) == {"me": 3}

    run(database, body)


def test_per_name_limit_holds_across_claimers(database: str):
    async def body(store: Store) -> None:
        for i in range(10):
            await store.create(_job(f"j_{i}", name="limited"))
        others = [await open_store(database) for _ in range(3)]
        try:
            got = await asyncio.gather(
                *(s.claim(f"s{i}", 1, {"limited": 2}, _prepare) for i, s in enumerate(others * 3))
            )
        finally:
            for s in others:
                await s.close()
        assert sum(g is not None for g in got) == 2
        assert (await store.counts())["running"] == 2

    run(database, body)


def test_concurrent_claimers_take_each_job_once(database: str):
    async def body(store: Store) -> None:
        ids = [f"j_{i:03d}" for i in range(150)]
        for job_id in ids:
            await store.create(_job(job_id))
        claimers = [await open_store(database) for _ in range(3)]

        async def drain(s: Store, owner: str) -> list[str]:
            taken = []
            while (got := await s.claim(owner, 1, {"x": 0}, _prepare)) is not None:
                taken.append(got[0].id)
            return taken

        try:
            results = await asyncio.gather(*(drain(s, f"s{i}") for i, s in enumerate(claimers)))
        finally:
            for s in claimers:
                await s.close()
        assert sorted(j for r in results for j in r) == ids

    run(database, body)


def _log(message: str) -> NewLog:
    return NewLog(1, "info", message, {"m": message}, "worker")


def test_group_commit_records_and_fences_on_the_current_attempt(database: str):
    async def body(store: Store) -> None:
        await store.create(_job("j_1", max_attempts=2))
        job, _ = await store.claim("a", 1, {"x": 0}, _prepare)  # type: ignore[misc]
        first = Batch(logs=[_log("one"), _log("two")], progress=(10.0, "ten", None), last_seq=3)
        later = Batch(progress=(20.0, None, {"p": 1}), checkpoint=({"done": 2},), out_offset=7)
        applied = await store.write(
            "a",
            [Record("j_1", 1, 1, first), Record("j_1", 1, 3, later), SetPid("j_1", 1, 4242, 99)],
        )
        assert applied == [True, True, True]
        job = await store.get("j_1")
        assert job is not None
        # MSG-4: a progress without a message keeps the previous message
        assert (job.progress_percent, job.progress_message, job.progress_data) == (
            20.0,
            "ten",
            {"p": 1},
        )
        assert (job.checkpoint, job.pid) == ({"done": 2}, 4242)
        [rec] = await store.running_attempts("a")
        assert (rec.last_seq, rec.out_offset, rec.log_count, rec.pid_start) == (3, 7, 2, 99)
        # Not the owner, or not the attempt: refused, nothing changes.
        stray = Batch(logs=[_log("stray")], progress=(99.0, "stray", None))
        assert await store.write("b", [Record("j_1", 1, 3, stray)]) == [False]
        assert await store.write("a", [Record("j_1", 2, 3, stray)]) == [False]
        # The attempt fails and is retried elsewhere, with its checkpoint (CKPT-4).
        assert await store.write("a", [Finish("j_1", 1, "failed", 5, error="x", retry_at=2)]) == [
            True
        ]
        job, rec = await store.claim("b", 3, {"x": 0}, _prepare)  # type: ignore[misc]
        assert (job.attempt, job.checkpoint, rec.token) == (2, {"done": 2}, "token-j_1.2")
        # The old attempt's late messages change nothing.
        assert await store.write(
            "a", [Record("j_1", 1, 3, stray), Finish("j_1", 1, "completed", 6, result=1)]
        ) == [False, False]
        assert [e.message for e in await store.logs("j_1", 0, 100)] == ["one", "two"]
        assert await store.write("b", [Finish("j_1", 2, "completed", 7, result={"ok": 1})]) == [
            True
        ]
        job = await store.get("j_1")
        assert job is not None
        assert (job.status, job.result, job.finished_at, job.attempt) == (
            "completed",
            {"ok": 1},
            7,
            2,
        )
        assert await store.running_attempts("b") == []

    run(database, body)


def test_logs_page_by_index(database: str):
    async def body(store: Store) -> None:
        await store.create(_job("j_1"))
        await store.claim("a", 1, {"x": 0}, _prepare)
        await store.write("a", [Record("j_1", 1, 1, Batch(logs=[_log(str(i)) for i in range(5)]))])
        page = await store.logs("j_1", 2, 2)
        assert [(e.index, e.message, e.data, e.source) for e in page] == [
            (3, "2", {"m": "2"}, "worker"),
            (4, "3", {"m": "3"}, "worker"),
        ]
        assert [e.index for e in await store.last_logs("j_1", 2)] == [4, 5]

    run(database, body)


def test_attempt_rows_follow_claims_outcomes_and_exits(database: str):
    async def body(store: Store) -> None:
        await store.create(_job("j_1", max_attempts=2))
        await store.claim("a", 10, {"x": 0}, _prepare)
        await store.write(
            "a", [SetPid("j_1", 1, 77, 1), Finish("j_1", 1, "failed", 20, error="e", retry_at=0)]
        )
        await store.write("a", [EndAttempt("j_1", 1, 25, 1, ["replay"], {"lines": []})])
        await store.claim("b", 30, {"x": 0}, _prepare)
        first, second = await store.attempts("j_1", 0, 10)
        assert (first.server_id, first.pid, first.outcome, first.error, first.ended_at) == (
            "a",
            77,
            "failed",
            "e",
            20,
        )
        assert (first.exited_at, first.exit_status, first.features, first.wire) == (
            25,
            1,
            ["replay"],
            {"lines": []},
        )
        assert (second.attempt, second.server_id, second.started_at, second.outcome) == (
            2,
            "b",
            30,
            None,
        )
        assert [a.attempt for a in await store.attempts("j_1", 1, 10)] == [2]

    run(database, body)


def test_unclaim_and_cancels(database: str):
    async def body(store: Store) -> None:
        for job_id in ("j_1", "j_2", "j_3"):
            await store.create(_job(job_id))
        await store.claim("a", 1, {"x": 0}, _prepare)
        await store.unclaim("a", "j_1", 1)
        job = await store.get("j_1")
        assert job is not None and (job.status, job.attempt) == ("pending", 0)
        assert await store.cancel_pending("j_1", 9)
        assert not await store.cancel_pending("j_1", 9)
        await store.claim("a", 1, {"x": 0}, _prepare)  # j_2
        assert await store.request_cancel("j_2") == "a"
        assert await store.request_cancel("j_3") is None  # not running
        [rec] = await store.running_attempts("a")
        assert (rec.job_id, rec.cancel_requested) == ("j_2", True)

    run(database, body)


def test_expired_leases_are_reaped_once_and_their_attempts_retried(database: str):
    async def body(store: Store) -> None:
        await store.create(_job("j_retry", max_attempts=2))
        await store.create(_job("j_last", max_attempts=1))
        await store.create(_job("j_alive"))
        await store.renew("dead", 1)
        await store.claim("dead", 1, {"x": 0}, _prepare)
        await store.claim("dead", 1, {"x": 0}, _prepare)
        await store.renew("alive", 60_000)
        await store.claim("alive", 1, {"x": 0}, _prepare)
        await store.write("dead", [Record("j_retry", 1, 1, Batch(checkpoint=({"at": 3},)))])
        await asyncio.sleep(0.01)
        reapers = [await open_store(database) for _ in range(3)]
        try:
            results = await asyncio.gather(
                *(
                    r.reap(f"r{i}", lambda name, a, m: 50 if a < m else None)
                    for i, r in enumerate(reapers)
                )
            )
        finally:
            for r in reapers:
                await r.close()
        lost = [item for result in results for item in result]
        assert sorted((x.job_id, x.owner, x.retry_at) for x in lost) == [
            ("j_last", "dead", None),
            ("j_retry", "dead", 50),
        ]
        retried, failed = await store.get("j_retry"), await store.get("j_last")
        assert retried is not None and failed is not None
        assert (retried.status, retried.run_at, retried.checkpoint) == ("pending", 50, {"at": 3})
        assert (failed.status, failed.error) == (
            "failed",
            "attempt lost: server dead stopped renewing its lease",
        )
        assert [lease.server_id for lease in await store.leases()] == ["alive"]
        assert await store.write("dead", [Finish("j_last", 1, "completed", 9)]) == [False]
        lease = await store.renew("alive", 60_000)
        assert lease.expires_at - lease.renewed_at == 60_000
        await store.leave("alive")
        assert await store.leases() == []

    run(database, body)


def test_migrations_run_once_when_servers_start_at_once(database: str):
    async def main() -> None:
        stores = await asyncio.gather(*(open_store(database) for _ in range(4)))
        for store in stores:
            await store.close()
        reopened = await open_store(database)
        await reopened.close()

    asyncio.run(main())
    from extjob.server.store._schema import POSTGRES, SQLITE

    if is_url(database):
        import psycopg

        with psycopg.connect(database) as conn:
            rows = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
        assert [r[0] for r in rows] == list(range(1, len(POSTGRES) + 1))
    else:
        import sqlite3

        with sqlite3.connect(database) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(SQLITE)

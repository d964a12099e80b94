"""Group commits: everything written while the previous commit ran, in one transaction.

Each read of a connection is one batch (REPLAY-2); with a hundred busy
workers one loop iteration reads a hundred small batches, and while one
commit is in flight the next ones pile up. The recorder keeps at most one
commit in flight and sends everything queued meanwhile as the next one, so
the store's cost per message falls as the load grows and nobody waits
longer than one commit. Consecutive batches of one attempt are merged into
one write. Each write's callback learns the outcome, and only then are acks
sent and events emitted:

- ``True``: stored;
- ``False``: refused, the attempt is no longer current (fenced: declared
  lost, retried elsewhere);
- ``None``: not stored, the store failed (the caller decides: a worker
  replays, an output file is read again). PIDs and outcomes are instead
  retried here until the store takes them: nobody could send them again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from .store import Batch, Record, Store, Write

log = logging.getLogger(__name__)

Done = Callable[[bool | None], None]
RETRY_SECONDS = 0.5
#: After a commit, writes that carry only progress wait this long for more to
#: join them. Progress is state, the latest wins (SRV-3): a worker reporting
#: it a thousand times a second cost a commit, and two hand-offs to the
#: store's thread, per read (a fifth of the deployed server's loop at 10k
#: progress/s). Its events leave before the commit; only acks wait longer.
PROGRESS_GATHER_SECONDS = 0.02


class Recorder:
    def __init__(self, store: Store, owner: str) -> None:
        self._store = store
        self._owner = owner
        self._pending: list[tuple[Write, Done]] = []
        self._task: asyncio.Task[None] | None = None
        self._retrying = 0  # writes waiting to be tried again
        self._idle = asyncio.Event()
        self._idle.set()
        self.failures = 0

    def add(self, write: Write, done: Done) -> None:
        self._pending.append((write, done))
        self._idle.clear()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, job_id: str) -> None:
        """Drop the job's queued Records, as not stored: after a failed commit its
        worker replays everything unacknowledged, these included."""
        keep: list[tuple[Write, Done]] = []
        dropped: list[tuple[Write, Done]] = []
        for item in self._pending:
            (dropped if isinstance(item[0], Record) and item[0].job_id == job_id else keep).append(
                item
            )
        self._pending = keep
        for _, done in dropped:
            done(None)

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything added so far is stored; False if a write failed meanwhile."""
        failures = self.failures
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return self.failures == failures

    async def _run(self) -> None:
        try:
            # Yield once: the other reads of this loop iteration join the group.
            await asyncio.sleep(0)
            while self._pending:
                pending, self._pending = self._pending, []
                await self._commit(pending)
                if self._pending and all(map(_progress_only, self._pending)):
                    await asyncio.sleep(PROGRESS_GATHER_SECONDS)
        finally:
            self._task = None
            if self._pending:
                self._task = asyncio.get_running_loop().create_task(self._run())
            elif not self._retrying:
                self._idle.set()

    async def _commit(self, pending: list[tuple[Write, Done]]) -> None:
        writes, groups = _merge(pending)
        try:
            applied: list[bool | None] = list(await self._store.write(self._owner, writes))
        except Exception:
            log.exception("could not store %d writes", len(writes))
            self.failures += 1
            applied = [None] * len(writes)
            retry = [
                item
                for write, group in zip(writes, groups, strict=True)
                if not isinstance(write, Record)
                for item in group
            ]
            if retry:
                self._retry_later(retry)
                groups = [g for w, g in zip(writes, groups, strict=True) if isinstance(w, Record)]
                applied = applied[: len(groups)]
        for result, group in zip(applied, groups, strict=True):
            for _, done in group:
                try:
                    done(result)
                except Exception:
                    log.exception("a write's callback failed")

    def _retry_later(self, items: list[tuple[Write, Done]]) -> None:
        self._retrying += len(items)

        def again() -> None:
            self._retrying -= len(items)
            for write, done in items:
                self.add(write, done)

        asyncio.get_running_loop().call_later(RETRY_SECONDS, again)


def _progress_only(item: tuple[Write, Done]) -> bool:
    write = item[0]
    if not isinstance(write, Record):
        return False
    batch = write.batch
    return batch.progress is not None and not (
        batch.logs
        or batch.terminal
        or batch.checkpoint
        or batch.out_offset is not None
        or batch.err_offset is not None
    )


def _merge(
    pending: list[tuple[Write, Done]],
) -> tuple[list[Write], list[list[tuple[Write, Done]]]]:
    """Merge runs of Records of one attempt whose log indexes follow on."""
    writes: list[Write] = []
    groups: list[list[tuple[Write, Done]]] = []
    for write, done in pending:
        last = writes[-1] if writes else None
        if (
            isinstance(write, Record)
            and isinstance(last, Record)
            and (last.job_id, last.attempt) == (write.job_id, write.attempt)
            and last.first_index + len(last.batch.logs) == write.first_index
        ):
            if len(groups[-1]) == 1:  # merge into a copy: the caller keeps its batch
                last = Record(last.job_id, last.attempt, last.first_index, _copy(last.batch))
                writes[-1] = last
            last.batch.absorb(write.batch)
            groups[-1].append((write, done))
            continue
        writes.append(write)
        groups.append([(write, done)])
    return writes, groups


def _copy(batch: Batch) -> Batch:
    return dataclasses.replace(batch, logs=list(batch.logs))

"""Group commits: the batches of one event-loop iteration in one transaction.

Each read of a connection is one batch (REPLAY-2); with a hundred busy
workers one loop iteration reads a hundred small batches. Committing them
together costs one transaction instead of a hundred, and nobody waits
longer: the flush runs as soon as the iteration's reads are done
(``call_soon``). Each batch's callback learns whether it was stored, and
only then are acks sent and events emitted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .store import Batch, Store

log = logging.getLogger(__name__)

Done = Callable[[bool], None]


class Recorder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pending: list[tuple[str, int, Batch, Done]] = []

    def add(self, job_id: str, first_index: int, batch: Batch, done: Done) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append((job_id, first_index, batch, done))

    def flush(self) -> bool:
        """Store everything pending now; False if the store failed (nothing was stored)."""
        pending, self._pending = self._pending, []
        if not pending:
            return True
        try:
            self._store.record([(job_id, first, batch) for job_id, first, batch, _ in pending])
            ok = True
        except Exception:
            log.exception("could not record %d batches", len(pending))
            ok = False
        for *_, done in pending:
            done(ok)
        return ok

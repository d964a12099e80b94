"""Several servers, one queue: this server's lease, the reaper, wake-ups, the shared event log.

Every server holds a lease row in the store and renews it every third of
``lease_ms``. A server whose lease has expired is gone (its host died, or it
froze): the first live server to notice declares its running attempts lost
and queues them again per CKPT-4, with their checkpoint, after the job's
retry backoff. Anything the lost attempts still send is refused by the
store (every write is conditional on the attempt being current) and their
tokens belong to no current attempt any more (AUTH-4). A server that finds
its own lease was taken stops the workers it still has (``abandon``). A
server restarting within its lease re-adopts its workers as before.

With a shared store (PostgreSQL) the servers also tell each other, through
the store's notifications, when a job may be claimable (an enqueue, a
retry, a freed slot) and when a running job's cancel was requested; and
they share one numbered event log, so that every server's event bus, SSE
streams and dashboard show the whole cluster's jobs, with event ids that
mean the same on every server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Protocol

import orjson

from extjob.protocol import retry_delay_ms

from .config import JobDefinition, ServerConfig
from .events import EventBus
from .models import Event, Metrics, now_ms
from .run import AttemptRun
from .store import CANCEL, EVENTS, WAKE, Lost, SharedStore, Store, StoredEvent


class ClusterHost(Protocol):
    """What membership and the event feed need of the server that joins (the
    ``JobServer``): a protocol, so that this module does not import it back."""

    config: ServerConfig
    jobs: dict[str, JobDefinition]
    runs: dict[str, AttemptRun]
    metrics: Metrics
    events: EventBus

    @property
    def store(self) -> Store: ...
    def wake(self) -> None: ...
    def abandon(self, run: AttemptRun) -> None: ...
    def cancel_here(self, run: AttemptRun) -> None: ...


log = logging.getLogger(__name__)

EVENT_LOG_KEEP = 100_000  # events kept in the shared log for Last-Event-ID resumes
EVENT_BACKSTOP_SECONDS = 1.0  # a look at the log even without a notification
PUBLISH_RETRY_SECONDS = 0.5


class Membership:
    def __init__(self, server: ClusterHost) -> None:
        self.server = server
        self.store = server.store
        self.server_id = server.config.server_id
        self.lease_ms = server.config.lease_ms
        self.renewed = time.monotonic()
        self.feed: EventFeed | None = None
        if self.store.shared:
            self.feed = EventFeed(server, self.store)  # type: ignore[arg-type]
        self._tasks: list[asyncio.Task[None]] = []
        self._joined = False

    @property
    def lease_age(self) -> float:
        """Seconds since the lease was last renewed."""
        return time.monotonic() - self.renewed

    async def join(self) -> None:
        await self._renew()
        if self.feed is not None:
            await self.feed.open()

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._keep(), name="extjob-lease"))
        if self.feed is not None:
            shared: SharedStore = self.store  # type: ignore[assignment]
            self._tasks.append(
                asyncio.create_task(shared.watch(self._notice), name="extjob-listen")
            )
            self._tasks += self.feed.start()

    async def stop(self, leave: bool) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.feed is not None:
            await self.feed.close()
        if leave:
            with contextlib.suppress(Exception):
                await self.store.leave(self.server_id)

    async def _renew(self) -> bool:
        """Renew the lease; False when it had been taken (our attempts are gone)."""
        lease = await self.store.renew(self.server_id, self.lease_ms)
        self.renewed = time.monotonic()
        fresh = lease.started_at == lease.renewed_at  # no row was there: a new lease
        joined, self._joined = self._joined, True
        return not (fresh and joined)

    async def _keep(self) -> None:
        interval = self.lease_ms / 3000
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self._renew():
                    await self._give_up_lost_runs()
                lost = await self.store.reap(self.server_id, self._retry_at)
                self._report(lost)
                if self.feed is not None:
                    await self.feed.prune()
            except Exception:
                log.exception("lease: cannot renew or reap (the database?); retrying")

    def _retry_at(self, name: str, attempt: int, max_attempts: int) -> int | None:
        """CKPT-4: a lost attempt is retried like a failed one, after the backoff."""
        if attempt >= max_attempts:
            return None
        definition = self.server.jobs.get(name)
        if definition is None:
            return now_ms()
        return now_ms() + retry_delay_ms(
            attempt, definition.retry_backoff_ms, definition.max_retry_backoff_ms
        )

    def _report(self, lost: list[Lost]) -> None:
        for item in lost:
            self.server.metrics.takeovers += 1
            log.warning(
                "job %s attempt %d: server %s lost its lease; %s",
                item.job_id,
                item.attempt,
                item.owner,
                "retried" if item.retry_at is not None else "failed",
            )
            self.server.events.emit(
                "job.lost",
                item.job_id,
                {
                    "jobId": item.job_id,
                    "name": item.name,
                    "attempt": item.attempt,
                    "reason": f"server {item.owner} lost its lease",
                    "retryAt": item.retry_at,
                },
            )
        if lost:
            self.server.wake()

    async def _give_up_lost_runs(self) -> None:
        """Our lease expired and was taken: stop the workers of attempts that are not ours."""
        current = {(r.job_id, r.attempt) for r in await self.store.running_attempts(self.server_id)}
        for run in list(self.server.runs.values()):
            if (run.job_id, run.rec.attempt) not in current and not run.finalized:
                self.server.abandon(run)

    def _notice(self, channel: str, payload: str) -> None:
        if channel == WAKE:
            self.server.wake()
        elif channel == CANCEL:
            run = self.server.runs.get(payload)
            if run is not None:
                self.server.cancel_here(run)
            elif not payload:  # after a reconnect: which requests did we miss?
                asyncio.get_running_loop().create_task(self._recheck_cancels())
        elif channel == EVENTS and self.feed is not None:
            self.feed.pull()

    async def _recheck_cancels(self) -> None:
        with contextlib.suppress(Exception):
            for rec in await self.store.running_attempts(self.server_id):
                run = self.server.runs.get(rec.job_id)
                if rec.cancel_requested and run is not None:
                    self.server.cancel_here(run)


StoredListener = Callable[[StoredEvent], None]


class EventFeed:
    """This server's events into the shared log; everybody else's onto this server's bus."""

    def __init__(self, server: ClusterHost, store: SharedStore) -> None:
        self.server = server
        self.store = store
        self.origin = server.config.server_id
        self.cluster_id = store.cluster_id
        self.cursor = 0  # the number of the last event of the log seen here
        self._outbox: list[Event] = []
        self._listeners: list[StoredListener] = []
        self._publishing: asyncio.Task[None] | None = None
        self._pulling: asyncio.Task[None] | None = None
        self._pull_again = False
        self._off: Callable[[], None] | None = None

    async def open(self) -> None:
        self.cursor = await self.store.last_event()
        # From now on, also what recovery finds (job.lost) goes into the log.
        self._off = self.server.events.on("*", self._local)

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._backstop(), name="extjob-events")]

    def on(self, listener: StoredListener) -> Callable[[], None]:
        """Call ``listener`` with every event of the log, in order; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def close(self) -> None:
        if self._off is not None:
            self._off()
        if self._publishing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._publishing), 5)
        if self._pulling is not None:
            self._pulling.cancel()

    async def prune(self) -> None:
        await self.store.prune_events(EVENT_LOG_KEEP)

    # out

    def _local(self, event: Event) -> None:
        if event.origin is not None:
            return  # came from the log
        self._outbox.append(event)
        if self._publishing is None:
            self._publishing = asyncio.get_running_loop().create_task(self._publish())

    async def _publish(self) -> None:
        try:
            await asyncio.sleep(0)  # the events of this loop iteration go together
            while self._outbox:
                events, self._outbox = _coalesce(self._outbox), []
                rows = [(e.name, e.job_id, _json(e.data)) for e in events]
                try:
                    await self.store.publish(self.origin, rows)
                except Exception:
                    log.exception("events: cannot publish %d events; retrying", len(rows))
                    self._outbox = events + self._outbox
                    await asyncio.sleep(PUBLISH_RETRY_SECONDS)
        finally:
            self._publishing = None

    # in

    def pull(self) -> None:
        if self._pulling is not None:
            self._pull_again = True
            return
        self._pulling = asyncio.get_running_loop().create_task(self._pull())

    async def _pull(self) -> None:
        try:
            while True:
                self._pull_again = False
                events = await self.store.events_after(self.cursor, 1000)
                for event in events:
                    self._deliver(event)
                if len(events) < 1000 and not self._pull_again:
                    return
        except Exception:
            log.exception("events: cannot read the shared log; retrying")
        finally:
            self._pulling = None

    def _deliver(self, event: StoredEvent) -> None:
        self.cursor = event.number
        if event.origin != self.origin:
            self.server.events.emit(event.name, event.job_id, event.data, origin=event.origin)
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("events: a listener failed")

    async def _backstop(self) -> None:
        while True:
            await asyncio.sleep(EVENT_BACKSTOP_SECONDS)
            self.pull()


def _coalesce(events: list[Event]) -> list[Event]:
    """Of several progress events of one job in a batch, the last is enough (live state)."""
    last = {e.job_id: i for i, e in enumerate(events) if e.name == "job.external.progress"}
    return [
        e for i, e in enumerate(events) if e.name != "job.external.progress" or last[e.job_id] == i
    ]


def _json(data: object) -> str:
    try:
        return orjson.dumps(data, default=str).decode()
    except TypeError:  # integers beyond 64 bits
        return json.dumps(data, default=str, ensure_ascii=False)

"""The in-process event bus (SPEC section 5.4).

Publishing never blocks and never raises: a subscriber's queue is bounded,
and a subscriber that falls behind loses its oldest events (counted in
``Subscription.dropped``) rather than stalling the server or growing without
limit. Synchronous callbacks run inline; an exception in one is logged and
does not reach the server.
"""

from __future__ import annotations

import asyncio
import collections
import fnmatch
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from .models import Event

log = logging.getLogger(__name__)

DEFAULT_QUEUE_SIZE = 100_000


class Subscription:
    """An async iterator over events published after it was created."""

    def __init__(self, bus: EventBus, pattern: str, maxsize: int) -> None:
        self._bus = bus
        self._pattern = pattern
        self._events: collections.deque[Event] = collections.deque(maxlen=maxsize)
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _push(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)
        self._wakeup.set()

    def close(self) -> None:
        """Stop receiving; iteration ends once the queued events are consumed."""
        self._closed = True
        self._bus._unsubscribe(self)
        self._wakeup.set()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._events:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._events.popleft()

    async def get(self, timeout: float | None = None) -> Event:
        """The next event; raises TimeoutError after ``timeout`` seconds."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of server events to subscriptions and callbacks.

    Patterns are shell-style (``fnmatch``): ``"job.*.completed"``, ``"*"``.
    """

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._subscriptions: set[Subscription] = set()
        self._callbacks: list[tuple[str, Callable[[Event], Any]]] = []
        # event name -> who gets it; rebuilt lazily after (un)subscribing, so
        # that publishing is one dict lookup on the ingest path.
        self._routes: dict[str, tuple[list[Subscription], list[Callable[[Event], Any]]]] = {}

    def subscribe(self, pattern: str = "*", maxsize: int = DEFAULT_QUEUE_SIZE) -> Subscription:
        sub = Subscription(self, pattern, maxsize)
        self._subscriptions.add(sub)
        self._routes.clear()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)
        self._routes.clear()

    def on(self, pattern: str, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for every matching event; returns an unsubscribe function."""
        entry = (pattern, callback)
        self._callbacks.append(entry)
        self._routes.clear()

        def off() -> None:
            self._callbacks.remove(entry)
            self._routes.clear()

        return off

    def _route(self, name: str) -> tuple[list[Subscription], list[Callable[[Event], Any]]]:
        route = self._routes.get(name)
        if route is None:
            route = (
                [s for s in self._subscriptions if _matches(s._pattern, name)],
                [c for p, c in self._callbacks if _matches(p, name)],
            )
            self._routes[name] = route
        return route

    def wants(self, name: str) -> bool:
        """Whether anybody listens to ``name`` (to skip building an event nobody gets)."""
        subs, callbacks = self._route(name)
        return bool(subs or callbacks)

    def emit(
        self, name: str, job_id: str, data: dict[str, Any], origin: str | None = None
    ) -> Event:
        event = Event(next(self._ids), name, job_id, data, time.time(), origin)
        subs, callbacks = self._route(name)
        for sub in subs:
            sub._push(event)
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("event callback %r failed on %s", callback, name)
        return event


def _matches(pattern: str, name: str) -> bool:
    return pattern == "*" or pattern == name or fnmatch.fnmatchcase(name, pattern)

"""The SSE event ring: numbering, resume points, per-job filtering, overflow;
live streams on real sockets: every event in order, slow clients ended."""

from __future__ import annotations

import asyncio

from extjob.client.sse import SseEvent, SseParser
from extjob.server.http.events import WRITE_BUFFER_LIMIT, EventHub


def hub_with(events: int, history: int = 4) -> EventHub:
    hub = EventHub(history)
    for n in range(1, events + 1):
        hub.publish("job.external.progress", f"j_{n % 2}", {"percent": n, "text": "ünï\ncode"})
    return hub


def parse(frames: bytes | None) -> list[tuple[str | None, str, dict[str, object]]]:
    assert frames is not None
    return [(e.id, e.name, e.json()) for e in SseParser().feed(frames)]


def test_events_are_numbered_per_boot_and_encoded_as_sse() -> None:
    hub = hub_with(2)
    events = parse(hub.since(0, None))
    assert [e[0] for e in events] == [f"{hub.boot}-1", f"{hub.boot}-2"]
    assert events[0][1] == "job.external.progress"
    assert events[0][2] == {"percent": 1, "text": "ünï\ncode"}  # a newline stays inside data


def test_resume_points_inside_the_ring_only() -> None:
    hub = hub_with(6, history=4)
    assert hub.resume_point(f"{hub.boot}-6") == 6  # up to date
    assert hub.resume_point(f"{hub.boot}-2") == 2  # the oldest event still held is 3
    assert hub.resume_point(f"{hub.boot}-1") is None  # event 2 is gone
    assert hub.resume_point(f"{hub.boot}-7") is None  # from the future
    assert hub.resume_point("0badb007-5") is None  # another server process
    assert hub.resume_point("garbage") is None
    assert hub.resume_point(None) is None


def test_since_filters_one_job_and_reports_what_the_ring_lost() -> None:
    hub = hub_with(6, history=4)
    assert [e[2]["percent"] for e in parse(hub.since(2, None))] == [3, 4, 5, 6]
    assert [e[2]["percent"] for e in parse(hub.since(2, "j_1"))] == [3, 5]
    assert hub.since(6, None) == b""
    assert hub.since(1, None) is None


def test_values_json_cannot_hold_natively_still_encode() -> None:
    hub = EventHub(4)
    hub.publish("job.completed", "j_1", {"result": 2**70, "when": object.__name__})
    assert parse(hub.since(0, None))[0][2] == {"result": 2**70, "when": "object"}


def test_an_event_is_encoded_only_when_a_stream_needs_it_and_only_once() -> None:
    """With no client connected, publishing encodes nothing (issue 15: the SSE
    layer must not cost the deployed server its ingest); every stream then
    shares one encoding per event."""
    encoded: list[int] = []

    class Counted:
        def __str__(self) -> str:  # the encoder writes unknown values with str()
            encoded.append(1)
            return "counted"

    hub = EventHub(8)
    hub.publish("job.external.progress", "j_1", {"value": Counted()})
    assert encoded == []
    first, second = parse(hub.since(0, None)), parse(hub.since(0, "j_1"))
    assert first == second == [(f"{hub.boot}-1", "job.external.progress", {"value": "counted"})]
    assert encoded == [1]


# -- live streams on real sockets ---------------------------------------------------------

DEADLINE = 30.0  # seconds: generous, a loaded machine only makes these slower


class _Client:
    """The client end of one stream: de-chunks what the hub wrote and parses it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer  # held: a StreamWriter let go closes its connection
        self.raw = b""
        self.parser = SseParser()
        self.events: list[SseEvent] = []

    async def read_until(self, count: int) -> list[SseEvent]:
        while len(self.events) < count:
            more = await asyncio.wait_for(self.reader.read(1 << 20), DEADLINE)
            assert more, f"the stream ended after {len(self.events)} of {count} events"
            self.raw += more
            while True:  # whole HTTP chunks only
                head, crlf, rest = self.raw.partition(b"\r\n")
                if not crlf or len(rest) < int(head, 16) + 2:
                    break
                size = int(head, 16)
                self.events += self.parser.feed(rest[:size])
                self.raw = rest[size + 2 :]
        return self.events


async def _streams(
    count: int,
) -> tuple[asyncio.Server, list[asyncio.WriteTransport], list[_Client]]:
    """``count`` real loopback connections: the server's transports, the clients' ends."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[asyncio.WriteTransport] = asyncio.Queue()

    class Accept(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.WriteTransport)
            accepted.put_nowait(transport)

    server = await loop.create_server(Accept, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    transports, clients = [], []
    for _ in range(count):
        clients.append(_Client(*await asyncio.open_connection(host, port)))
        transports.append(await asyncio.wait_for(accepted.get(), DEADLINE))
    return server, transports, clients


def test_live_streams_get_every_event_in_order_one_write_per_flush() -> None:
    """Whatever the flushes' pace, a stream gets every event after its cursor,
    in order, none twice: logs and terminals are never coalesced; the events
    of one loop iteration go to each stream in one write."""

    async def main() -> None:
        hub = EventHub(10_000)
        server, transports, clients = await _streams(3)
        followed = [
            asyncio.create_task(hub.follow(transports[0], None, 0)),
            asyncio.create_task(hub.follow(transports[1], None, 0)),
            asyncio.create_task(hub.follow(transports[2], "j_1", 0)),
        ]
        while hub.streams < 3:
            await asyncio.sleep(0)
        expected: list[tuple[str, str]] = []
        for burst in range(200):
            for i in range(10):
                job = f"j_{i % 2}"
                name = ("job.external.progress", "job.external.log")[i % 2]
                hub.publish(name, job, {"burst": burst, "i": i})
                expected.append((job, name))
            await asyncio.sleep(0)  # a flush may come, or its pause go on
        hub.publish("job.completed", "j_1", {"result": "done"})
        expected.append(("j_1", "job.completed"))
        every = [f"{hub.boot}-{n}" for n in range(1, len(expected) + 1)]
        mine = [every[n] for n, (job, _) in enumerate(expected) if job == "j_1"]
        for client, ids in zip(clients, (every, every, mine), strict=True):
            events = await client.read_until(len(ids))
            assert [e.id for e in events] == ids
        assert clients[2].events[-1].name == "job.completed"

        writes = hub.writes
        for n in range(5):  # one loop iteration's events
            hub.publish("job.external.log", "j_1", {"n": n})
        for client, ids in zip(clients, (every, every, mine), strict=True):
            await client.read_until(len(ids) + 5)
        assert hub.writes == writes + 3
        flushes = hub.delay.count  # each flush timed its oldest event, once
        assert 1 <= flushes <= 202 and hub.delay.buckets[-1] <= flushes
        hub.close()
        assert await asyncio.gather(*followed) == ["shutdown"] * 3
        server.close()

    asyncio.run(main())


def test_a_stream_that_does_not_read_is_ended_as_slow_and_the_others_lose_nothing() -> None:
    """More than WRITE_BUFFER_LIMIT queued for a client that does not read
    ends its stream ("slow": the client resumes with its Last-Event-ID); a
    client that reads gets every event."""

    async def main() -> None:
        hub = EventHub(1_000)
        server, transports, clients = await _streams(2)
        reading = asyncio.create_task(hub.follow(transports[0], None, 0))
        stuck = asyncio.create_task(hub.follow(transports[1], None, 0))
        while hub.streams < 2:
            await asyncio.sleep(0)
        big = "x" * 65_536
        total = 0
        while not stuck.done():
            assert total * len(big) < 20 * WRITE_BUFFER_LIMIT, "the stuck stream was never ended"
            for _ in range(8):
                total += 1
                hub.publish("job.external.log", "j_1", {"n": total, "message": big})
            # The reading client keeps up, however slowly this machine runs it.
            await clients[0].read_until(total)
        assert stuck.result() == "slow"
        hub.publish("job.completed", "j_1", {"n": total + 1})
        events = await clients[0].read_until(total + 1)
        assert [e.json()["n"] for e in events] == list(range(1, total + 2))
        assert not reading.done() and hub.streams == 1
        hub.close()
        assert await reading == "shutdown"
        server.close()

    asyncio.run(main())

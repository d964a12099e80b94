"""The SSE event ring: numbering, resume points, per-job filtering, overflow."""

from __future__ import annotations

from extjob.client.sse import SseParser
from extjob.server.http.events import EventHub


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

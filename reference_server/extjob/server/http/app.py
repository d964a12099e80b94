"""The aiohttp application: routes, bearer auth, JSON errors, request timing."""

from __future__ import annotations

import dataclasses
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from extjob.protocol import MAX_PAYLOAD_BYTES

from .. import Event, Job, JobServer
from ..models import now_ms
from ..store import StoredEvent
from . import events, metrics
from .inputs import RequestError, enqueue_options, query_status
from .openapi import OPENAPI
from .paging import number_cursor, page, page_query
from .settings import HttpSettings

STATIC = Path(__file__).parent / "static"
STARTED_AT = web.AppKey("started_at", float)
SERVER = web.AppKey("server", JobServer)
HUB = web.AppKey("hub", events.EventHub)
LATENCY = web.AppKey("latency", metrics.RequestLatency)
TOKEN = web.AppKey("token", str)
UNSUBSCRIBE: web.AppKey[Callable[[], None]] = web.AppKey("unsubscribe")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(server: JobServer, settings: HttpSettings) -> web.Application:
    """The HTTP API over ``server`` (which the caller starts and stops)."""
    # LIMIT-2 bounds the job's data; the envelope around it is small.
    app = web.Application(
        client_max_size=MAX_PAYLOAD_BYTES + 64 * 1024,
        middlewares=[_timing, _errors, _auth],
    )
    app[SERVER] = server
    feed = server.event_feed
    if feed is None:
        app[HUB] = events.EventHub(settings.event_history)
    else:  # event ids are the shared log's numbers: the same on every server of the cluster
        app[HUB] = events.EventHub(settings.event_history, feed.cluster_id, feed.cursor)
    app[LATENCY] = metrics.RequestLatency()
    app[TOKEN] = settings.token
    app[STARTED_AT] = time.time()
    app.on_startup.append(_feed_hub)
    app.on_shutdown.append(_close_streams)
    app.add_routes(
        [
            web.get("/api/health", health),
            web.get("/metrics", prometheus),
            web.post("/api/jobs", enqueue),
            web.get("/api/jobs", list_jobs),
            web.get("/api/jobs/{id}", get_job),
            web.post("/api/jobs/{id}/cancel", cancel),
            web.post("/api/jobs/{id}/retry", retry),
            web.get("/api/jobs/{id}/logs", logs),
            web.get("/api/jobs/{id}/attempts", attempts),
            web.get("/api/jobs/{id}/attempts/{attempt}/wire", wire),
            web.get("/api/counts", counts),
            web.get("/api/openapi.json", openapi_document),
            web.get("/api/events", all_events),
            web.get("/api/jobs/{id}/events", job_events),
            web.get("/api/definitions", definitions),
            web.get("/", dashboard),
            web.static("/static", STATIC, follow_symlinks=False),
        ]
    )
    return app


async def _feed_hub(app: web.Application) -> None:
    hub = app[HUB]
    feed = app[SERVER].event_feed
    if feed is not None:

        def forward_stored(event: StoredEvent) -> None:
            data = {**event.data, "jobId": event.job_id}
            hub.publish(event.name, event.job_id, data, event.number)

        app[UNSUBSCRIBE] = feed.on(forward_stored)
        return

    def forward(event: Event) -> None:
        hub.publish(event.name, event.job_id, {**event.data, "jobId": event.job_id})

    app[UNSUBSCRIBE] = app[SERVER].events.on("*", forward)


async def _close_streams(app: web.Application) -> None:
    app[UNSUBSCRIBE]()  # the job server may outlive its HTTP API
    app[HUB].close()


# -- middlewares ---------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is JSON: ``{"error": {"code", "message", "field"?}}``."""
    try:
        return await handler(request)
    except RequestError as e:
        return _error(e.status, e.code, e.message, e.field)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = e.reason.lower().replace(" ", "_")
        return _error(e.status, code, e.text or e.reason, headers=e.headers)


@web.middleware
async def _timing(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.perf_counter()
    response = await handler(request)
    if response.headers.get("Content-Type") != "text/event-stream":
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app[LATENCY].observe(
            request.method, name, response.status, time.perf_counter() - start
        )
    return response


# What needs no token: the page and the API's description hold no data.
_PUBLIC = frozenset({"/", "/api/health", "/api/openapi.json"})


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Everything but health needs the token. The dashboard's files hold no
    # data: the page asks for the token and sends it with each API call.
    path = request.path
    if path in _PUBLIC or path.startswith("/static/"):
        return await handler(request)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    expected = request.app[TOKEN]
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.strip().encode(), expected.encode()
    ):
        message = (
            "missing bearer token: send 'Authorization: Bearer <token>'"
            if not presented
            else "wrong bearer token"
        )
        raise RequestError(401, "unauthorized", message)
    return await handler(request)


def _error(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Any = None,
) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    response = web.json_response({"error": body}, status=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="extjob"'
        response.force_close()  # limits.py: one request per connection without the token
    if headers and "Allow" in headers:
        response.headers["Allow"] = headers["Allow"]
    return response


# -- handlers --------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    uptime_ms = int((time.time() - request.app[STARTED_AT]) * 1000)
    return web.json_response({"status": "ok", "uptimeMs": uptime_ms})


async def enqueue(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    options = enqueue_options(await _json_body(request))
    try:
        job_id = await server.enqueue(**options)
    except KeyError as e:
        known = ", ".join(sorted(server.jobs)) or "none"
        raise RequestError(
            422, "unknown_job", f"no job definition named {e.args[0]!r} (defined: {known})", "name"
        ) from e
    except ValueError as e:
        raise RequestError(422, "invalid_options", str(e)) from e
    return await _created(request, job_id)


async def _created(request: web.Request, job_id: str) -> web.Response:
    job = await request.app[SERVER].get(job_id)
    assert job is not None  # enqueue stored it
    # Not an event of the job server (SPEC 5.4): this API's own, so that
    # dashboards see a job the moment it is queued.
    request.app[HUB].publish("job.enqueued", job_id, {"jobId": job_id, "name": job.name})
    return web.json_response(job.to_json(), status=201, headers={"Location": f"/api/jobs/{job_id}"})


async def list_jobs(request: web.Request) -> web.Response:
    status = query_status(request.query)
    name = request.query.get("name") or None
    limit, cursor = page_query(request.query, default=100)
    server = request.app[SERVER]
    if cursor is not None and await server.get(cursor) is None:
        raise RequestError(400, "invalid_query", f"cursor: no job with id {cursor!r}", "cursor")
    jobs = await server.list(status=status, name=name, limit=limit + 1, before=cursor)
    features = await server.current_features([job.id for job in jobs[:limit]])
    listed = [{**_job_json(server, job), "features": features.get(job.id)} for job in jobs]
    return web.json_response(page("jobs", listed, limit, "id"))


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(_job_json(request.app[SERVER], await _job(request)))


def _job_json(server: JobServer, job: Job) -> dict[str, Any]:
    return {**job.to_json(), "stale": server.is_stale(job.id)}


async def cancel(request: web.Request) -> web.Response:
    job = await _job(request)
    if not await request.app[SERVER].cancel(job.id):
        current = await request.app[SERVER].get(job.id)
        status = current.status if current is not None else job.status
        raise RequestError(409, "already_finished", f"job {job.id} is already {status}")
    updated = await request.app[SERVER].get(job.id)
    return web.json_response((updated or job).to_json(), status=202)


async def logs(request: web.Request) -> web.Response:
    job = await _job(request)
    limit, cursor = page_query(request.query, default=1000)
    server = request.app[SERVER]
    if request.query.get("tail") not in (None, "", "false", "true"):
        raise RequestError(400, "invalid_query", "tail: true or false", "tail")
    if request.query.get("tail") == "true":  # the newest entries: a page that ends now
        entries = await server.last_logs(job.id, limit)
        return web.json_response({"logs": [e.to_json() for e in entries], "nextCursor": None})
    entries = await server.logs(job.id, after=number_cursor(cursor), limit=limit + 1)
    return web.json_response(page("logs", [e.to_json() for e in entries], limit, "index"))


async def all_events(request: web.Request) -> web.StreamResponse:
    return await events.stream(request, request.app[HUB], None, None)


async def job_events(request: web.Request) -> web.StreamResponse:
    job = await _job(request)
    server = request.app[SERVER]

    async def snapshot() -> dict[str, Any] | None:
        current = await server.get(job.id)
        return current.to_json() if current is not None else None

    return await events.stream(request, request.app[HUB], job.id, snapshot)


async def definitions(request: web.Request) -> web.Response:
    # Names and limits only: commands, paths and environments stay on the server.
    limit, cursor = page_query(request.query, default=1000)
    items = [
        {
            "name": d.name,
            "maxAttempts": d.max_attempts,
            "timeoutMs": d.timeout_ms,
            "heartbeatTimeoutMs": d.heartbeat_timeout_ms,
            "concurrency": d.concurrency,
        }
        for d in sorted(request.app[SERVER].jobs.values(), key=lambda d: d.name)
        if cursor is None or d.name > cursor
    ]
    return web.json_response(page("definitions", items[: limit + 1], limit, "name"))


async def counts(request: web.Request) -> web.Response:
    name = request.query.get("name") or None
    by_state = await request.app[SERVER].counts(name)
    return web.json_response({"counts": by_state, "total": sum(by_state.values())})


async def retry(request: web.Request) -> web.Response:
    """A new job with the same name, data, priority and attempts as a failed or cancelled one."""
    job = await _job(request)
    if job.status not in ("failed", "cancelled"):
        raise RequestError(
            409, "not_retryable", f"job {job.id} is {job.status}: only failed or cancelled jobs"
        )
    server = request.app[SERVER]
    try:
        job_id = await server.enqueue(
            job.name, job.data, max_attempts=job.max_attempts, priority=job.priority
        )
    except KeyError as e:
        raise RequestError(
            422, "unknown_job", f"job {job.id}: its definition {job.name!r} is gone", "name"
        ) from e
    return await _created(request, job_id)


async def attempts(request: web.Request) -> web.Response:
    job = await _job(request)
    limit, cursor = page_query(request.query, default=100)
    found = await request.app[SERVER].attempts(job.id, after=number_cursor(cursor), limit=limit + 1)
    return web.json_response(page("attempts", [a.to_json() for a in found], limit, "attempt"))


async def wire(request: web.Request) -> web.Response:
    """The wire view of one attempt (``extjob.server.wire`` says what is kept)."""
    job = await _job(request)
    raw = request.match_info["attempt"]
    number = int(raw) if raw.isdigit() and len(raw) <= 9 else 0
    limit, cursor = page_query(request.query, default=1000)
    found = await request.app[SERVER].attempts(job.id, after=number - 1, limit=1)
    if not found or found[0].attempt != number:
        raise RequestError(404, "unknown_attempt", f"job {job.id} has no attempt {raw!r}")
    attempt = found[0]
    view = attempt.wire or {"messages": [], "omitted": 0}
    start = number_cursor(cursor)
    messages = [{"index": start + i + 1, **m} for i, m in enumerate(view["messages"][start:])]
    return web.json_response(
        {
            "attempt": number,
            "live": attempt.exited_at is None,
            "kept": attempt.wire is not None,
            "omitted": view["omitted"],
            **page("messages", messages[: limit + 1], limit, "index"),
        }
    )


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def prometheus(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    hub = request.app[HUB]
    lines = list(await _job_metrics(server))
    lines += metrics.metric(
        "extjob_sse_events_total",
        "counter",
        "Events published to SSE streams.",
        {(): hub.published},
    )
    lines += metrics.metric("extjob_sse_streams", "gauge", "Open SSE streams.", {(): hub.streams})
    lines += metrics.metric(
        "extjob_sse_writes_total",
        "counter",
        "Writes to SSE streams' sockets (the events of a flush go out in one write).",
        {(): hub.writes},
    )
    lines += metrics.metric(
        "extjob_sse_write_cpu_seconds_total",
        "counter",
        "CPU the server spent writing to SSE streams.",
        {(): hub.write_cpu},
    )
    name = "extjob_sse_delay_seconds"
    lines += [
        f"# HELP {name} From an event's publication to its write to every SSE stream.",
        f"# TYPE {name} histogram",
        *hub.delay.lines(name),
    ]
    lines += request.app[LATENCY].lines()
    return web.Response(
        text="\n".join(lines) + "\n",
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )


_COUNTER_HELP = {
    "messages_received": "Valid worker messages received.",
    "invalid_lines": "Worker lines discarded as invalid (SRV-6).",
    "stale_count": "Times a job went stale (STALE-1).",
    "killed_count": "Worker process groups terminated (KILL-1).",
    "reconnects": "Worker reconnections after a server restart or a fault.",
    "spawned": "Worker processes spawned.",
    "lost": "Running jobs not found again after a restart.",
    "claims": "Jobs this server claimed from the queue.",
    "takeovers": "Attempts of other servers whose lease expired, declared lost by this server.",
    "fenced": "Attempts of this server stopped because the store refused their writes.",
}


async def _job_metrics(server: JobServer) -> list[str]:
    counts = await server.counts()
    by_state: dict[tuple[tuple[str, str], ...], float] = {
        (("state", state),): n for state, n in counts.items()
    }
    lines = list(metrics.metric("extjob_jobs", "gauge", "Jobs by state.", by_state))
    running: dict[tuple[tuple[str, str], ...], float] = {}
    for job in await server.running():
        labels = (("name", job.name),)
        running[labels] = running.get(labels, 0) + 1
    lines += metrics.metric("extjob_jobs_running", "gauge", "Running jobs by name.", running)
    for counter, value in dataclasses.asdict(server.metrics).items():
        help_text = _COUNTER_HELP.get(counter, counter.replace("_", " ") + ".")
        lines += metrics.metric(f"extjob_{counter}_total", "counter", help_text, {(): value})
    return lines + await _cluster_metrics(server)


async def _cluster_metrics(server: JobServer) -> list[str]:
    """This server's lease, and every server's as the store has it (all servers show the same)."""
    me = server.config.server_id
    lines: list[str] = []
    if server.membership is not None:
        lines += metrics.metric(
            "extjob_lease_age_seconds",
            "gauge",
            "Seconds since this server last renewed its lease.",
            {(("server", me),): server.membership.lease_age},
        )
    now = now_ms()
    leases = await server.store.leases()
    lines += metrics.metric(
        "extjob_cluster_servers",
        "gauge",
        "Servers whose lease has not expired.",
        {(): sum(lease.expires_at > now for lease in leases)},
    )
    lines += metrics.metric(
        "extjob_cluster_lease_age_seconds",
        "gauge",
        "Seconds since each server renewed its lease (by this server's clock).",
        {(("server", lease.server_id),): (now - lease.renewed_at) / 1000 for lease in leases},
    )
    running = await server.store.running_by_owner()
    lines += metrics.metric(
        "extjob_cluster_running",
        "gauge",
        "Running jobs by the server that runs them.",
        {(("server", owner),): n for owner, n in running.items()},
    )
    return lines


async def dashboard(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _job(request: web.Request) -> Any:
    job_id = request.match_info["id"]
    job = await request.app[SERVER].get(job_id) if len(job_id) <= 256 else None
    if job is None:
        raise RequestError(404, "unknown_job", f"no job with id {job_id!r}")
    return job


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise RequestError(
            415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)"
        )
    raw = await request.read()
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON: {e}") from e


def _reject_constant(name: str) -> None:
    # NaN and Infinity are not JSON (RFC 8259) and no worker could decode them.
    raise ValueError(f"{name} is not a JSON value")

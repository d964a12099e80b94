"""The OpenAPI 3.1 description of the HTTP API, served at ``/api/openapi.json``.

Written by hand, next to the routes it describes; a test checks that every
route of the app is here and nothing else, and validates the document
against the OpenAPI 3.1 meta-schema, so that clients can be generated from it.
"""

from __future__ import annotations

from typing import Any

from ..models import STATUSES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "bad query or body",
        401: "missing or wrong bearer token",
        404: "no such job (or attempt)",
        409: "not possible in the job's state",
        415: "the body is not JSON",
        422: "no such job definition, or bad options",
    }
    return {str(s): _json(_ref("Error"), reasons[s]) for s in statuses}


def _page(key: str, item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key, "nextCursor"],
        "properties": {
            key: {"type": "array", "items": _ref(item)},
            "nextCursor": {
                "type": ["string", "null"],
                "description": "null at the end of the list as it is now; else pass as ?cursor=",
            },
        },
    }


def _nullable(kind: str | list[str], **more: Any) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else kind
    return {"type": [*kinds, "null"], **more}


_PAGING = [{"$ref": "#/components/parameters/limit"}, {"$ref": "#/components/parameters/cursor"}]
_ID = {"$ref": "#/components/parameters/id"}
_STATE_DOC = "state (pending, running, completed, failed, cancelled)"


def _get(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[Any] | None = None,
    errors: tuple[int, ...] = (401,),
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": ok, **_errors(*errors)},
    }
    if public:
        operation["security"] = []
    return operation


_SSE = {
    "description": "text/event-stream: `id: <boot>-<n>`, `event: <name>`, `data: <JSON>`",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "the bad field or parameter"},
                },
            }
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "name", "status", "attempt", "maxAttempts", "createdAt"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "data": {"description": "any JSON value"},
            "status": {"enum": list(STATUSES)},
            "attempt": {"type": "integer"},
            "maxAttempts": {"type": "integer"},
            "priority": {"type": "integer"},
            "runAt": {"type": "integer", "description": "epoch ms"},
            "progress": {
                "type": "object",
                "properties": {
                    "percent": _nullable("number"),
                    "message": _nullable("string"),
                    "data": {},
                },
            },
            "result": {},
            "checkpoint": {},
            "error": _nullable("string"),
            "stack": _nullable("string"),
            "pid": _nullable("integer"),
            "createdAt": {"type": "integer"},
            "startedAt": _nullable("integer"),
            "finishedAt": _nullable("integer"),
            "stale": {
                "type": "boolean",
                "description": "its worker is silent for longer than the heartbeat timeout "
                "(STALE-1; known to the server that runs it)",
            },
        },
    },
    "Enqueue": {
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 256},
            "data": {"description": "any JSON value, handed to the worker"},
            "maxAttempts": {"type": "integer", "minimum": 1},
            "priority": {"type": "integer"},
            "runAt": {
                "oneOf": [
                    {"type": "integer", "minimum": 0, "description": "epoch ms"},
                    {"type": "string", "description": "ISO 8601 with an offset"},
                ]
            },
        },
    },
    "LogEntry": {
        "type": "object",
        "required": ["jobId", "index", "timestamp", "level", "message", "source"],
        "properties": {
            "jobId": {"type": "string"},
            "index": {"type": "integer", "minimum": 1},
            "timestamp": {"type": "integer"},
            "level": {"type": "string"},
            "message": {"type": "string"},
            "data": {},
            "source": {"enum": ["worker", "stdout", "stderr", "server"]},
        },
    },
    "Attempt": {
        "type": "object",
        "required": ["jobId", "attempt", "serverId", "startedAt"],
        "properties": {
            "jobId": {"type": "string"},
            "attempt": {"type": "integer", "minimum": 1},
            "serverId": {"type": "string", "description": "the server that ran it"},
            "pid": _nullable("integer"),
            "startedAt": {"type": "integer"},
            "endedAt": _nullable("integer", description="the outcome was recorded"),
            "outcome": _nullable("string", description="completed, failed or cancelled"),
            "error": _nullable("string"),
            "exitedAt": _nullable("integer"),
            "exitStatus": _nullable("integer", description="negative: killed by that signal"),
            "features": _nullable(
                "array",
                items={"type": "string"},
                description="negotiated by the hello; [] for a v1 worker; null: unknown",
            ),
        },
    },
    "WireMessage": {
        "type": "object",
        "required": ["index", "t", "dir", "message"],
        "properties": {
            "index": {"type": "integer"},
            "t": {"type": "integer", "description": "ms since the spawn"},
            "dir": {"enum": ["in", "out"]},
            "message": {"description": "the message, or the start of a long one as text"},
        },
    },
    "Definition": {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "maxAttempts": {"type": "integer"},
            "timeoutMs": _nullable("integer"),
            "heartbeatTimeoutMs": {"type": "integer"},
            "concurrency": {"type": "integer"},
        },
    },
    "Counts": {
        "type": "object",
        "required": ["counts", "total"],
        "properties": {
            "counts": {
                "type": "object",
                "properties": {state: {"type": "integer"} for state in STATUSES},
            },
            "total": {"type": "integer"},
        },
    },
    "ListedJob": {
        "allOf": [
            _ref("Job"),
            {
                "properties": {
                    "features": _nullable(
                        "array",
                        items={"type": "string"},
                        description="what its latest attempt negotiated (see Attempt)",
                    )
                }
            },
        ]
    },
    "JobPage": _page("jobs", "ListedJob"),
    "LogPage": _page("logs", "LogEntry"),
    "AttemptPage": _page("attempts", "Attempt"),
    "DefinitionPage": _page("definitions", "Definition"),
}
_SCHEMAS["WirePage"] = {
    **_page("messages", "WireMessage"),
    "properties": {
        **_page("messages", "WireMessage")["properties"],
        "attempt": {"type": "integer"},
        "live": {"type": "boolean", "description": "the worker has not exited yet"},
        "kept": {"type": "boolean", "description": "false: another server runs it"},
        "omitted": {"type": "integer", "description": "messages between the first and last kept"},
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "extjob reference server",
        "version": "1",
        "description": (
            "Jobs, their logs, attempts and wire view, live events over SSE. Every list "
            "pages the same way (?limit=&cursor= -> {items, nextCursor}); every error "
            "is {error: {code, message, field?}}."
        ),
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/health": {
            "get": _get(
                "liveness, no token",
                _json({"type": "object", "required": ["status"]}, "ok"),
                errors=(),
                public=True,
            )
        },
        "/api/openapi.json": {
            "get": _get(
                "this description, no token",
                _json({"type": "object"}, "OpenAPI 3.1"),
                errors=(),
                public=True,
            )
        },
        "/api/jobs": {
            "get": _get(
                "jobs, newest first",
                _json(_ref("JobPage"), "a page"),
                params=[
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"enum": list(STATUSES)},
                        "description": _STATE_DOC,
                    },
                    {"name": "name", "in": "query", "schema": {"type": "string"}},
                    *_PAGING,
                ],
                errors=(400, 401),
            ),
            "post": {
                "summary": "enqueue a job",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Enqueue")}},
                },
                "responses": {
                    "201": _json(_ref("Job"), "queued"),
                    **_errors(400, 401, 415, 422),
                },
            },
        },
        "/api/jobs/{id}": {
            "get": _get("one job", _json(_ref("Job"), "the job"), params=[_ID], errors=(401, 404))
        },
        "/api/jobs/{id}/cancel": {
            "post": {
                "summary": "cancel a pending or running job",
                "parameters": [_ID],
                "responses": {
                    "202": _json(_ref("Job"), "cancelled, or cancel under way"),
                    **_errors(401, 404, 409),
                },
            }
        },
        "/api/jobs/{id}/retry": {
            "post": {
                "summary": "a new job with the data of a failed or cancelled one",
                "parameters": [_ID],
                "responses": {
                    "201": _json(_ref("Job"), "the new job"),
                    **_errors(401, 404, 409, 422),
                },
            }
        },
        "/api/jobs/{id}/logs": {
            "get": _get(
                "the job's log, oldest first (cursor: an entry's index)",
                _json(_ref("LogPage"), "a page"),
                params=[
                    _ID,
                    *_PAGING,
                    {
                        "name": "tail",
                        "in": "query",
                        "schema": {"enum": ["true", "false"]},
                        "description": "true: the newest `limit` entries",
                    },
                ],
                errors=(400, 401, 404),
            )
        },
        "/api/jobs/{id}/attempts": {
            "get": _get(
                "the job's attempts, oldest first",
                _json(_ref("AttemptPage"), "a page"),
                params=[_ID, *_PAGING],
                errors=(400, 401, 404),
            )
        },
        "/api/jobs/{id}/attempts/{attempt}/wire": {
            "get": _get(
                "the wire view of one attempt: the first and the newest messages",
                _json(_ref("WirePage"), "a page"),
                params=[
                    _ID,
                    {
                        "name": "attempt",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 1},
                    },
                    *_PAGING,
                ],
                errors=(400, 401, 404),
            )
        },
        "/api/jobs/{id}/events": {
            "get": _get(
                "SSE: job.state, then the job's events", _SSE, params=[_ID], errors=(401, 404)
            )
        },
        "/api/events": {
            "get": _get("SSE: every event of every job; stream.reset after a gap", _SSE)
        },
        "/api/counts": {
            "get": _get(
                "jobs by state",
                _json(_ref("Counts"), "counts"),
                params=[{"name": "name", "in": "query", "schema": {"type": "string"}}],
            )
        },
        "/api/definitions": {
            "get": _get(
                "job names and limits (never commands)",
                _json(_ref("DefinitionPage"), "a page"),
                params=_PAGING,
                errors=(400, 401),
            )
        },
        "/metrics": {
            "get": _get(
                "Prometheus text format",
                {
                    "description": "metrics",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
            )
        },
        "/": {
            "get": _get(
                "the dashboard",
                {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                errors=(),
                public=True,
            )
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "parameters": {
            "id": {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
            "limit": {
                "name": "limit",
                "in": "query",
                "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
            "cursor": {
                "name": "cursor",
                "in": "query",
                "schema": {"type": "string"},
                "description": "nextCursor of the previous page",
            },
        },
        "schemas": _SCHEMAS,
    },
}

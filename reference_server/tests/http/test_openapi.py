"""``/api/openapi.json``: valid OpenAPI 3.1, every route in it and nothing else,
and what the routes answer matches the schemas it gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
from http_helpers import Server, wait_for
from openapi_spec_validator import OpenAPIV31SpecValidator

from extjob.server import JobServer, ServerConfig
from extjob.server.http import HttpSettings, create_app

FAR = 4102444800000


def _document(server: Server) -> dict[str, Any]:
    reply = server.call("GET", "/api/openapi.json", token=None)  # public, like health
    assert reply.status == 200
    document: dict[str, Any] = reply.body
    return document


def _routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every route the app has, static files aside."""
    config = ServerConfig(database=str(tmp_path / "db"), socket_dir=str(tmp_path / "s"))
    app = create_app(JobServer(config), HttpSettings(token="x" * 16))
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        if "prefix" in info:  # web.static: the dashboard's files
            continue
        if route.method != "HEAD":  # aiohttp adds HEAD to every GET
            routes.add((route.method.lower(), route.resource.canonical))  # type: ignore[union-attr]
    return routes


def test_the_description_is_valid_openapi_3_1(server: Server) -> None:
    document = _document(server)
    assert document["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(document).validate()  # raises on the first error


def test_every_route_is_described_and_nothing_else(server: Server, tmp_path: Path) -> None:
    document = _document(server)
    described = {
        (method, path)
        for path, operations in document["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert described == _routes(tmp_path)


def _check(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """``body`` fits the schema the description gives for this answer."""
    response = document["paths"][path][method]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(body)


def test_answers_match_their_schemas(server: Server) -> None:
    document = _document(server)
    job = server.enqueue("thumbnails", {"steps": 2, "delayMs": 10})
    server.wait_for_status(job["id"], "completed")
    wait_for(
        lambda: server.call("GET", f"/api/jobs/{job['id']}/attempts").body["attempts"][0][
            "exitedAt"
        ]
    )
    pending = server.enqueue("later", runAt=FAR)
    jid = job["id"]
    for path, template, status in [
        (f"/api/jobs/{jid}", "/api/jobs/{id}", 200),
        ("/api/jobs?limit=1", "/api/jobs", 200),
        (f"/api/jobs/{jid}/logs", "/api/jobs/{id}/logs", 200),
        (f"/api/jobs/{jid}/attempts", "/api/jobs/{id}/attempts", 200),
        (f"/api/jobs/{jid}/attempts/1/wire", "/api/jobs/{id}/attempts/{attempt}/wire", 200),
        ("/api/counts", "/api/counts", 200),
        ("/api/definitions", "/api/definitions", 200),
        ("/api/jobs/j_nope", "/api/jobs/{id}", 404),
        ("/api/jobs?status=done", "/api/jobs", 400),
        (f"/api/jobs/{jid}/attempts/7/wire", "/api/jobs/{id}/attempts/{attempt}/wire", 404),
    ]:
        reply = server.call("GET", path)
        assert reply.status == status, (path, reply.body)
        _check(document, template, "get", status, reply.body)
    for path, template, status in [
        (f"/api/jobs/{pending['id']}/retry", "/api/jobs/{id}/retry", 409),
        (f"/api/jobs/{pending['id']}/cancel", "/api/jobs/{id}/cancel", 202),
        (f"/api/jobs/{pending['id']}/retry", "/api/jobs/{id}/retry", 201),
        (f"/api/jobs/{jid}/cancel", "/api/jobs/{id}/cancel", 409),
    ]:
        reply = server.call("POST", path)
        assert reply.status == status, (path, reply.body)
        _check(document, template, "post", status, reply.body)
    reply = server.call("POST", "/api/jobs", {"name": "nope"})
    assert reply.status == 422
    _check(document, "/api/jobs", "post", 422, reply.body)
    reply = server.call("GET", "/api/jobs", token=None)
    _check(document, "/api/jobs", "get", 401, reply.body)


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/health", "/"])
def test_what_needs_no_token_holds_no_data(server: Server, path: str) -> None:
    assert server.call("GET", path, token=None).status == 200

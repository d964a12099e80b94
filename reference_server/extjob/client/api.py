"""An asyncio client for the reference server's HTTP API."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .sse import SseEvent, SseParser

DEFAULT_URL = "http://127.0.0.1:8765"
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)
# Long enough to ride out a server restart, short enough to notice one that
# is gone for good.
GIVE_UP_AFTER_SECONDS = 60.0


class ApiError(Exception):
    """The server answered with an error, or could not be reached (``status`` 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


@dataclass(frozen=True)
class Target:
    """Which server to talk to, and the bearer token."""

    url: str
    token: str

    @classmethod
    def resolve(
        cls,
        url: str | None,
        token: str | None,
        http_table: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Target:
        """Flags win, then ``EXTJOB_URL``/``EXTJOB_TOKEN``, then a config's ``[http]`` table."""
        table = http_table or {}
        if not url:
            url = environ.get("EXTJOB_URL")
        if not url and table:
            host = table.get("host", "127.0.0.1")
            host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            url = f"http://{_bracket(host)}:{table.get('port', 8765)}"
        if not token:
            token = environ.get("EXTJOB_TOKEN")
        if not token:
            token = table.get("token") or environ.get(table.get("token_env", ""), "")
        return cls(url=(url or DEFAULT_URL).rstrip("/"), token=token or "")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class ApiClient:
    """``async with ApiClient(target) as api: await api.get(job_id)``."""

    def __init__(self, target: Target) -> None:
        self.target = target
        headers = {"Authorization": f"Bearer {target.token}"} if target.token else {}
        self._session = aiohttp.ClientSession(
            base_url=target.url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            async with self._session.request(
                method, path, timeout=aiohttp.ClientTimeout(total=30), **kwargs
            ) as response:
                body = (
                    await response.json(content_type=None) if response.content_length != 0 else None
                )
                if response.status >= 400:
                    error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
                    raise ApiError(
                        response.status,
                        error.get("code", "http_error"),
                        error.get("message", response.reason or "error"),
                    )
                return body
        except aiohttp.ClientConnectionError as e:
            raise ApiError(0, "unreachable", f"cannot reach {self.target.url}: {e}") from e
        except (aiohttp.ContentTypeError, ValueError) as e:
            raise ApiError(0, "bad_response", f"{self.target.url} did not answer JSON: {e}") from e

    async def enqueue(self, name: str, data: Any, **options: Any) -> dict[str, Any]:
        body = {"name": name, "data": data, **{k: v for k, v in options.items() if v is not None}}
        result: dict[str, Any] = await self.request("POST", "/api/jobs", json=body)
        return result

    async def get(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/api/jobs/{job_id}")
        return result

    async def list(self, **params: Any) -> dict[str, Any]:
        query = {k: str(v) for k, v in params.items() if v is not None}
        result: dict[str, Any] = await self.request("GET", "/api/jobs", params=query)
        return result

    async def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", f"/api/jobs/{job_id}/cancel")
        return result

    async def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> dict[str, Any]:
        # A log's cursor is the index of the last entry seen.
        params = {"cursor": str(after), "limit": str(limit)} if after else {"limit": str(limit)}
        result: dict[str, Any] = await self.request(
            "GET", f"/api/jobs/{job_id}/logs", params=params
        )
        return result

    async def events(self, job_id: str | None = None) -> AsyncGenerator[SseEvent, None]:
        """Events of one job (first its ``job.state``) or of all, forever.

        A dropped stream is reopened with ``Last-Event-ID`` (so nothing is
        missed while the server keeps running), and across a server restart;
        raises ApiError when the server stays unreachable for
        ``GIVE_UP_AFTER_SECONDS``.
        """
        path = f"/api/jobs/{job_id}/events" if job_id else "/api/events"
        parser = SseParser()
        failures = 0
        loop = asyncio.get_running_loop()
        down_since = loop.time()
        while True:
            headers = {"Last-Event-ID": parser.last_event_id} if parser.last_event_id else {}
            try:
                async with self._session.get(path, headers=headers) as response:
                    if response.status >= 400:
                        body = await response.json(content_type=None)
                        error = body.get("error", {}) if isinstance(body, dict) else {}
                        raise ApiError(
                            response.status,
                            error.get("code", "http_error"),
                            error.get("message", response.reason or "error"),
                        )
                    failures = 0
                    down_since = loop.time()
                    async for chunk in response.content.iter_any():
                        for event in parser.feed(chunk):
                            yield event
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
                if loop.time() - down_since > GIVE_UP_AFTER_SECONDS:
                    raise ApiError(0, "unreachable", f"lost {self.target.url}: {e}") from e
            failures += 1
            await asyncio.sleep(RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS)) - 1])

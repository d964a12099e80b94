"""The reference server's HTTP API, live events over SSE, and the dashboard.

An aiohttp application over a running :class:`extjob.server.JobServer`
(``create_app``), and ``extjob serve`` which runs both in one process.
Configured by the ``[http]`` table of the server's config file::

    [http]
    host = "127.0.0.1"        # loopback by default
    port = 8765
    token_env = "EXTJOB_TOKEN" # where the bearer token is read from...
    # token = "..."            # ...unless it is given here
    event_history = 10000      # events kept for Last-Event-ID resume
    max_connections = 0        # 0: a quarter of the open files limit, at most 1024 (limits.py)
    idle_timeout_ms = 15000    # a connection with no request in flight is closed after this

Every route but ``GET /api/health``, ``GET /api/openapi.json`` (and the
dashboard's static files, which hold no data) needs ``Authorization: Bearer
<token>``. Errors are JSON: ``{"error": {"code": "...", "message": "...",
"field": "..."}}``. Every list pages the same way (:mod:`.paging`):
``?limit=&cursor=`` -> ``{"<items>": [...], "nextCursor": "..." | null}``.

=======  =====================================  ==================================
method   path                                   what
=======  =====================================  ==================================
GET      /api/health                            ``{"status": "ok", "uptimeMs"}``
GET      /api/openapi.json                      the OpenAPI 3.1 description
POST     /api/jobs                              enqueue ``{"name", "data",
                                                "maxAttempts", "priority", "runAt"}``
                                                -> 201 + the job
GET      /api/jobs                              ``?status=&name=``, newest first
GET      /api/jobs/{id}                         one job (state, attempt, progress,
                                                result or error, times, pid)
POST     /api/jobs/{id}/cancel                  202 + the job; 409 when finished
POST     /api/jobs/{id}/retry                   201 + a new job with the same data;
                                                409 unless failed or cancelled
GET      /api/jobs/{id}/logs                    by index; ``?tail=true``: the newest
GET      /api/jobs/{id}/attempts                server, pid, outcome, exit status,
                                                negotiated features
GET      /api/jobs/{id}/attempts/{n}/wire       the wire view (:mod:`..wire`)
GET      /api/jobs/{id}/events                  SSE: ``job.state``, then live events
GET      /api/events                            SSE: every event of every job
GET      /api/counts                            ``?name=``: jobs by state
GET      /api/definitions                       job names and limits (no commands)
GET      /metrics                               Prometheus text format
GET      /                                      the dashboard
=======  =====================================  ==================================

Besides the job server's events (SPEC 5.4) the streams carry this API's own
``job.enqueued`` (``jobId``, ``name``) when a job is enqueued or retried
through it.

Requests can only name job definitions; nothing in a request is a path,
a command or an environment, so no request reaches the filesystem beyond
what the config defines. See :mod:`.events` for what ``Last-Event-ID``
guarantees.
"""

from .app import create_app
from .settings import HttpSettings, SettingsError

__all__ = ["HttpSettings", "SettingsError", "create_app"]

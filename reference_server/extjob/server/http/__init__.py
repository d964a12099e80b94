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

Every route but ``GET /api/health`` (and the dashboard's static files, which
hold no data) needs ``Authorization: Bearer <token>``. Errors are JSON:
``{"error": {"code": "...", "message": "...", "field": "..."}}``.

=======  =============================  ==========================================
method   path                           what
=======  =============================  ==========================================
GET      /api/health                    ``{"status": "ok", "uptimeMs"}``, no token
POST     /api/jobs                      enqueue ``{"name", "data", "maxAttempts",
                                        "priority", "runAt"}`` -> 201 + the job
GET      /api/jobs                      ``?status=&name=&limit=&offset=``, newest
                                        first -> ``{"jobs", "nextOffset"}``
GET      /api/jobs/{id}                 one job (state, attempt, progress, result
                                        or error, times, pid)
POST     /api/jobs/{id}/cancel          202 + the job; 409 when already finished
GET      /api/jobs/{id}/logs            ``?after=&limit=`` -> ``{"logs", "next"}``
GET      /api/jobs/{id}/events          SSE: ``job.state`` first, then live events
GET      /api/events                    SSE: every event of every job
GET      /api/definitions               job names and limits (never commands)
GET      /metrics                       Prometheus text format
GET      /                              the dashboard
=======  =============================  ==========================================

Requests can only name job definitions; nothing in a request is a path,
a command or an environment, so no request reaches the filesystem beyond
what the config defines. See :mod:`.events` for what ``Last-Event-ID``
guarantees.
"""

from .app import create_app
from .settings import HttpSettings, SettingsError

__all__ = ["HttpSettings", "SettingsError", "create_app"]

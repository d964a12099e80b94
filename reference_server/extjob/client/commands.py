"""Client commands that talk to a running server: enqueue, status, jobs, cancel, logs.

Where the server is: ``--url`` (else ``EXTJOB_URL``, else the ``[http]`` table
of ``--config``, else http://127.0.0.1:8765); the bearer token: ``--token``
(else ``EXTJOB_TOKEN``, else the config's). ``--json`` prints JSON for scripts.

Exit status: 0 success (with ``--follow``: the job completed), 1 the followed
job failed, 3 it was cancelled, 4 the server refused the request or could not
be reached, 2 usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from .api import ApiClient, ApiError, Target
from .follow import ProgressView, follow

EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_API_ERROR = 4
_OUTCOME_STATUS = {"completed": 0, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}

Command = Callable[[ApiClient, argparse.Namespace], Awaitable[int]]


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client commands to the ``extjob`` CLI."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the server's API (default: $EXTJOB_URL or the config's)")
    common.add_argument("--token", help="the API bearer token (default: $EXTJOB_TOKEN)")
    common.add_argument("--config", help="read the server's address and token from this config")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")

    p = subparsers.add_parser("enqueue", parents=[common], help="enqueue a job")
    p.add_argument("name", help="the job definition's name")
    p.add_argument("--data", default="{}", help="the job's data as JSON (default: {})")
    p.add_argument("--max-attempts", type=int)
    p.add_argument("--priority", type=int)
    p.add_argument("--run-at", help="epoch ms or ISO 8601 time with offset")
    p.add_argument("--follow", "-f", action="store_true", help="show progress until it ends")
    p.set_defaults(func=_runner(_enqueue))

    p = subparsers.add_parser("status", parents=[common], help="show one job")
    p.add_argument("id")
    p.set_defaults(func=_runner(_status))

    p = subparsers.add_parser("jobs", parents=[common], help="list jobs, newest first")
    p.add_argument("--status", choices=["pending", "running", "completed", "failed", "cancelled"])
    p.add_argument("--name")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="the page after this one (printed at the end of a page)")
    p.set_defaults(func=_runner(_jobs))

    p = subparsers.add_parser("cancel", parents=[common], help="cancel a job")
    p.add_argument("id")
    p.set_defaults(func=_runner(_cancel))

    p = subparsers.add_parser("logs", parents=[common], help="print a job's log")
    p.add_argument("id")
    p.add_argument("--after", type=int, default=0, help="start after this log index")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=_runner(_logs))


def _runner(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            target = Target.resolve(args.url, args.token, _http_table(args.config))
            return asyncio.run(_with_client(command, target, args))
        except ApiError as e:
            print(f"extjob {args.command}: {e}", file=sys.stderr)
            return EXIT_API_ERROR
        except ValueError as e:
            print(f"extjob {args.command}: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130

    return run


async def _with_client(command: Command, target: Target, args: argparse.Namespace) -> int:
    async with ApiClient(target) as api:
        return await command(api, args)


def _http_table(config_path: str | None) -> dict[str, Any] | None:
    if not config_path:
        return None
    from extjob.server import load_config

    return load_config(config_path).http


async def _enqueue(api: ApiClient, args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data)
    except ValueError as e:
        raise ValueError(f"--data is not valid JSON: {e}") from e
    run_at: Any = int(args.run_at) if args.run_at and args.run_at.isdigit() else args.run_at
    job = await api.enqueue(
        args.name, data, maxAttempts=args.max_attempts, priority=args.priority, runAt=run_at
    )
    if not args.follow:
        print(json.dumps(job) if args.json else job["id"])
        return 0
    if not args.json:
        print(f"enqueued {job['name']} {job['id']}", flush=True)
    return await _follow(api, job["id"], args.json, logs=True)


async def _status(api: ApiClient, args: argparse.Namespace) -> int:
    job = await api.get(args.id)
    if args.json:
        print(json.dumps(job))
        return 0
    progress = job.get("progress") or {}
    rows = [
        ("id", job["id"]),
        ("name", job["name"]),
        ("status", job["status"]),
        ("attempt", f"{job['attempt']} of {job['maxAttempts']}"),
        ("progress", _percent(progress.get("percent")) + " " + (progress.get("message") or "")),
        ("pid", job.get("pid")),
        ("created", _time(job.get("createdAt"))),
        ("started", _time(job.get("startedAt"))),
        ("finished", _time(job.get("finishedAt"))),
        ("data", json.dumps(job.get("data"))),
    ]
    if job["status"] == "completed":
        rows.append(("result", json.dumps(job.get("result"))))
    if job.get("error"):
        rows.append(("error", job["error"]))
    for key, value in rows:
        print(f"{key:<9} {'' if value is None else value}")
    return 0


async def _jobs(api: ApiClient, args: argparse.Namespace) -> int:
    page = await api.list(status=args.status, name=args.name, limit=args.limit, cursor=args.cursor)
    if args.json:
        print(json.dumps(page))
        return 0
    print(f"{'ID':<26} {'NAME':<16} {'STATUS':<10} {'PROGRESS':>8}  CREATED")
    for job in page["jobs"]:
        percent = _percent((job.get("progress") or {}).get("percent"))
        created = _time(job.get("createdAt"))
        print(f"{job['id']:<26} {job['name']:<16} {job['status']:<10} {percent:>8}  {created}")
    if page.get("nextCursor") is not None:
        print(f"(more: --cursor {page['nextCursor']})")
    return 0


async def _cancel(api: ApiClient, args: argparse.Namespace) -> int:
    job = await api.cancel(args.id)
    print(json.dumps(job) if args.json else f"cancel requested: {job['id']} ({job['status']})")
    return 0


async def _logs(api: ApiClient, args: argparse.Namespace) -> int:
    if not args.follow:
        await _print_stored_logs(api, args.id, args.after, args.json)
        return 0
    # Subscribe first, then read the stored log: a line logged in between is
    # then printed twice at worst, never lost. (Live lines that carry their
    # ``index`` are matched exactly.)
    events = api.events(args.id)
    try:
        state = (await anext(events)).json()  # job.state: the stream is live from here
        seen = await _print_stored_logs(api, args.id, args.after, args.json)
        if state["status"] in _OUTCOME_STATUS:
            return _OUTCOME_STATUS[state["status"]]
        async for event in events:
            data = event.json()
            if event.name == "job.external.log":
                index = data.get("index")
                if index is not None and index <= seen:
                    continue  # already printed from the stored log
                seen = index if index is not None else seen
                _print_log(data, args.json)
            elif event.name in ("job.completed", "job.failed", "job.cancelled", "job.lost"):
                job = await api.get(args.id)
                if job["status"] in _OUTCOME_STATUS:
                    return _OUTCOME_STATUS[job["status"]]
    finally:
        await events.aclose()
    raise AssertionError("the event stream never ends by itself")


async def _print_stored_logs(api: ApiClient, job_id: str, after: int, as_json: bool) -> int:
    """Print the stored log after index ``after``; returns the last index printed."""
    while True:
        page = await api.logs(job_id, after=after)
        for entry in page["logs"]:
            _print_log(entry, as_json)
            after = entry["index"]
        if page["nextCursor"] is None:
            return after


async def _follow(api: ApiClient, job_id: str, as_json: bool, logs: bool) -> int:
    view = None if as_json else ProgressView()
    job = await follow(api, job_id, view, logs)
    return _OUTCOME_STATUS[job["status"]]


def _print_log(entry: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(entry), flush=True)
        return
    when = _time(entry.get("timestamp"))
    extra = f" {json.dumps(entry['data'])}" if entry.get("data") else ""
    print(f"{when} {entry.get('level', 'info'):<5} {entry.get('message', '')}{extra}", flush=True)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _time(ms: float | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")

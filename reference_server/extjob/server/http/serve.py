"""``extjob serve``: the job server and its HTTP API in one process."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys

from aiohttp import web

from .. import JobServer, load_config
from ..private import warn_if_others_can_read
from ..ratelimit import limit_loop_errors
from ..resources import raise_open_files_limit
from . import limits
from .app import create_app
from .settings import HttpSettings, SettingsError

log = logging.getLogger("extjob.serve")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the job server with its HTTP API and dashboard",
        description=(
            "Run the job server until SIGTERM or Ctrl-C. On stop, running workers "
            "keep running and are re-adopted by the next start; --drain waits "
            "for them to finish instead."
        ),
    )
    p.add_argument("--config", required=True, help="the TOML config file")
    p.add_argument("--drain", action="store_true", help="on stop, wait for running jobs")
    p.add_argument(
        "--database",
        help="a SQLite file or a postgresql:// URL shared by several servers "
        "(default: EXTJOB_DATABASE, else the config's database)",
    )
    p.add_argument(
        "--server-id",
        help="this server's name in a shared database (default: host name and socket_dir); "
        "keep it across restarts, so that a restart re-adopts its workers",
    )
    p.add_argument("--host", help="override [http] host")
    p.add_argument("--port", type=int, help="override [http] port (0: any free port)")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, database=args.database)
        if args.server_id:
            config.server_id = args.server_id
        table = dict(config.http)
        table.update({k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None})
        settings = HttpSettings.from_table(table)
    except (ValueError, SettingsError) as e:
        print(f"extjob serve: {e}", file=sys.stderr)
        return 2
    if config.http.get("token"):
        warn_if_others_can_read(args.config, "config file", "the API token ([http] token)")
    try:
        asyncio.run(serve(JobServer(config), settings, drain=args.drain))
    except OSError as e:  # the port is taken, the database cannot be opened...
        print(f"extjob serve: {e}", file=sys.stderr)
        return 1
    return 0


# Allocations between two runs of the cyclic collector (Python's default: 700).
GC_THRESHOLD = 50_000


def _collect_rarely() -> None:
    """Ingest allocates a few short-lived objects per message and makes no
    cycles of its own; at the default threshold the collector ran every few
    reads over everything in flight (~10% of the CPU per message). What is
    loaded by now (modules, the app, recovered jobs) is frozen out of its
    scans. It still runs, so memory stays bounded."""
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GC_THRESHOLD), *threshold[1:])


async def serve(server: JobServer, settings: HttpSettings, drain: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, then stop the API and the server."""
    loop = asyncio.get_running_loop()
    limit_loop_errors(loop, log)
    raise_open_files_limit()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.open()  # the store: the app numbers events as the cluster's log does
    runner = web.AppRunner(
        create_app(server, settings),
        access_log=None,
        keepalive_timeout=settings.idle_timeout_ms / 1000,  # limits.py: idle connections
    )
    # The app subscribes to the server's events in its setup: before the
    # server starts, so that what recovery emits (job.lost, job.failed)
    # reaches the event streams too.
    await runner.setup()
    listener: asyncio.Server | None = None
    started = False
    try:
        await server.start()
        started = True
        assert runner.server is not None
        cap = settings.max_connections or limits.default_max_connections()
        listener = await loop.create_server(
            limits.capped(runner.server, cap),
            settings.host,
            settings.port,
            backlog=limits.accept_backlog(cap),
        )
        host, port = listener.sockets[0].getsockname()[:2]
        _collect_rarely()
        shown = f"[{host}]" if ":" in host else host
        # One parseable line on stdout: scripts (and the demo) wait for it.
        print(f"extjob: listening on http://{shown}:{port}/", flush=True)
        log.info("at most %d HTTP connections, idle ones closed after %d ms", cap,
                 settings.idle_timeout_ms)  # fmt: skip
        await stop.wait()
        log.info("stopping (%s)", "draining running jobs" if drain else "workers keep running")
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()
        if started:
            await server.stop(drain=drain)

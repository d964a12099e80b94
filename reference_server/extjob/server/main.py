"""Running a server as a process, without the HTTP API (``extjob serve`` has
it): ``run(config_path, drain=False)``.

SIGTERM and SIGINT stop it gracefully: workers keep running (or, with
``drain``, the server first waits for them), and the next start re-adopts
them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .config import load_config
from .ratelimit import limit_loop_errors
from .resources import raise_open_files_limit
from .server import JobServer

log = logging.getLogger("extjob.server")


async def run(
    config_path: str | os.PathLike[str], drain: bool = False, database: str | None = None
) -> None:
    server = JobServer(load_config(config_path, database=database))
    loop = asyncio.get_running_loop()
    limit_loop_errors(loop, log)
    raise_open_files_limit()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await server.start()
        log.info("extjob server started: %d running jobs, pid %d", len(server.runs), os.getpid())
        await stopping.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await server.stop(drain=drain)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m extjob.server", description=__doc__)
    parser.add_argument("config", help="the server's TOML config file")
    parser.add_argument("--drain", action="store_true", help="on stop, wait for running jobs")
    parser.add_argument("--database", help="a SQLite file or a postgresql:// URL")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(run(args.config, drain=args.drain, database=args.database))
    except ValueError as exc:
        print(f"extjob: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # private.UnsafePath, a database that cannot be opened...
        print(f"extjob: {exc}", file=sys.stderr)
        return 1
    return 0

"""The ``extjob`` command: one tool, a subcommand per job."""

from __future__ import annotations

import argparse
import sys

from extjob import validate
from extjob.client import commands as client
from extjob.client import demo
from extjob.conformance import cli as conformance
from extjob.server.http import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extjob", description="The external job protocol: validate, test, serve."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate.add_parser(commands)
    serve.add_parser(commands)
    client.add_parsers(commands)
    demo.add_parser(commands)
    conformance.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

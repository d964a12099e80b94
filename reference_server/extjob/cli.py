"""The ``extjob`` command: one tool, a subcommand per job."""

from __future__ import annotations

import argparse
import sys

from extjob import validate


def build_parser(validate_only: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="extjob", description="The external job protocol: validate, test, serve."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate.add_parser(commands)
    if not validate_only:
        from extjob.client import commands as client
        from extjob.client import demo
        from extjob.conformance import cli as conformance
        from extjob.server.http import serve

        serve.add_parser(commands)
        client.add_parsers(commands)
        demo.add_parser(commands)
        conformance.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `extjob validate` runs in CI pipelines, often on many files: it does not
    # wait for the server, client and harness modules to import (most of a
    # second on a busy machine) just to build their parsers.
    args = build_parser(validate_only=argv[:1] == ["validate"]).parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

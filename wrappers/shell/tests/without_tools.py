"""A PATH without some tools, to run the bash wrapper as on a fresh machine.

    python wrappers/shell/tests/without_tools.py socat jq -- COMMAND [ARGS...]

runs COMMAND with a PATH that finds every program the current PATH finds,
except the named ones (a fresh Debian has bash and python3, but neither jq
nor socat).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path


def path_without(tools: Iterable[str], into: Path, path: str | None = None) -> str:
    """A PATH that finds what PATH finds except TOOLS: each directory that
    holds one of them is replaced by a directory (in INTO) of links to the
    rest of its programs; the others stay (a venv's bin/ must stay itself)."""
    hidden = set(tools)
    dirs = []
    for n, directory in enumerate(
        (os.environ.get("PATH", "") if path is None else path).split(":")
    ):
        try:
            entries = sorted(Path(directory).iterdir())
        except OSError:
            continue
        if not any(entry.name in hidden for entry in entries):
            dirs.append(directory)
            continue
        copy = into / str(n)
        copy.mkdir()
        for entry in entries:
            if entry.name not in hidden and entry.is_file() and os.access(entry, os.X_OK):
                (copy / entry.name).symlink_to(entry)
        dirs.append(str(copy))
    return ":".join(dirs)


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    tools, command = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    with tempfile.TemporaryDirectory(prefix="without-") as tmp:
        env = {**os.environ, "PATH": path_without(tools, Path(tmp))}
        return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A throwaway PostgreSQL server for tests and benchmarks: real, never a mock.

``PgServer.start()`` runs Debian's ``initdb`` and ``pg_ctl`` in a temporary
directory, listening only on a Unix socket in that directory. As root
(CI runs as root) it runs them as the unprivileged ``postgres`` user, which
PostgreSQL requires, creating that user when it is missing. ``database()``
makes a fresh database per test.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

USER = "postgres"
NOT_INSTALLED = (
    "PostgreSQL is not installed (initdb not found; Debian: apt-get install postgresql; "
    ".ci/run installs it)"
)


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them out of PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    found = candidates[0] if candidates else shutil.which("initdb")
    return Path(found).parent if found else None


class PgServer:
    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="xpg", dir="/tmp"))
        self.data = self.root / "data"
        self.port = 5432
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            _ensure_user()
            shutil.chown(self.root, USER, USER)
            self._as_user = ["runuser", "-u", USER, "--"]

    @property
    def host(self) -> str:
        return str(self.root)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@/{database}?host={self.root}&port={self.port}"

    def _run(self, *argv: str) -> None:
        subprocess.run(
            [*self._as_user, *argv], check=True, capture_output=True, cwd=self.root, timeout=120
        )

    def start(self) -> PgServer:
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = ''\nunix_socket_directories = '{self.root}'\n"
                "max_connections = 300\nfsync = off\nfull_page_writes = off\n"
                "shared_buffers = 128MB\n"
            )
        self.restart(start_only=True)
        return self

    def restart(self, start_only: bool = False) -> None:
        """(Re)start the server and wait until it accepts connections."""
        action = "start" if start_only else "restart"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-m",
            "fast",
            action,
        )

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [
                str(self.bin / "psql") if (self.bin / "psql").exists() else "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.root),
                "-p",
                str(self.port),
                "-U",
                USER,
                "-d",
                database,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip()

    def database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [
                *self._as_user,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            cwd=self.root,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _ensure_user() -> None:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
            check=True,
        )
